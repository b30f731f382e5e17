//! Reading a topology from TOML, and the source map that lets validation errors name a line.
//!
//! The text is deserialised twice: once into the [`Topology`] model (with `deny_unknown_fields`; syntax and
//! shape errors carry toml's span), and once into a tree of spans (a source map) that validation uses to
//! say where an offending item was written.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

use crate::error::{Error, Location, Result};
use crate::model::Topology;

/// One step of a path into the TOML document: a table key or an array index.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Seg<'a> {
    /// A key of a table.
    Key(&'a str),
    /// An index into an array (or array of tables).
    Index(usize),
}

/// The span tree of a document: every table, array and value with its byte range.
#[derive(Debug)]
enum Node {
    Table(Vec<(String, Spanned<Node>)>),
    Array(Vec<Spanned<Node>>),
    Scalar,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any TOML value")
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> std::result::Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> std::result::Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_str<E>(self, _: &str) -> std::result::Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(Node::Table(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// Where each item of a topology file was written, for error messages.
///
/// Made by [`parse_toml`]; a topology built in Rust has none, and its errors carry no location.
#[derive(Debug)]
pub(crate) struct SourceMap {
    path: Option<Arc<Path>>,
    text: String,
    root: Option<Spanned<Node>>,
}

impl SourceMap {
    /// The location of a byte offset in the text.
    fn location_of(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or(&self.text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        let (line, column) = (
            u32::try_from(line).unwrap_or(u32::MAX),
            u32::try_from(column).unwrap_or(u32::MAX),
        );
        Location {
            path: self.path.clone(),
            line,
            column,
        }
    }

    /// Where the item at `path` was written; when the path does not exist in the file (a field left out
    /// and defaulted), the deepest enclosing item that does.
    pub(crate) fn locate(&self, path: &[Seg<'_>]) -> Option<Location> {
        let mut node = self.root.as_ref()?;
        let mut best: Option<usize> = None;
        for seg in path {
            let next = match (seg, node.get_ref()) {
                (Seg::Key(k), Node::Table(entries)) => {
                    entries.iter().find(|(name, _)| name == k).map(|(_, n)| n)
                }
                (Seg::Index(i), Node::Array(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => {
                    node = n;
                    best = Some(n.span().start);
                }
                None => break,
            }
        }
        best.map(|offset| self.location_of(offset))
    }
}

/// Parses a topology file without validating it. Use [`Topology::from_toml_str`] or
/// [`Topology::from_file`] to parse and validate.
pub(crate) fn parse_toml(text: &str, path: Option<&Path>) -> Result<(Topology, SourceMap)> {
    let mut map = SourceMap {
        path: path.map(Arc::from),
        text: text.to_owned(),
        root: None,
    };
    let topology: Topology = toml::from_str(text).map_err(|e| Error::Parse {
        message: e.message().trim().to_owned(),
        at: e.span().map(|s| map.location_of(s.start)),
    })?;
    // The model parsed, so the text is valid TOML; a span tree that still fails to build only costs the
    // line numbers of later validation errors.
    map.root = toml::from_str::<Spanned<Node>>(text).ok();
    Ok((topology, map))
}

impl Topology {
    /// Parses and validates a topology written in TOML. Errors name the line.
    pub fn from_toml_str(text: &str) -> Result<Topology> {
        let (topology, map) = parse_toml(text, None)?;
        topology.validate_with(Some(&map))?;
        Ok(topology)
    }

    /// Reads, parses and validates a topology file. Errors name the file and line.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Topology> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (topology, map) = parse_toml(&text, Some(path))?;
        topology.validate_with(Some(&map))?;
        Ok(topology)
    }

    /// Writes the topology in the file format ([`Topology::from_toml_str`] reads it back equal).
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::Parse {
            message: format!("cannot write topology: {e}"),
            at: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[runtime]\ndata_dir = \"x\"\n\n[[operator]]\nid = \"a\"\ninputs = [\"t1\", \"t2\"]\n\n[[operator]]\nid = \"b\"\n";

    fn map() -> SourceMap {
        SourceMap {
            path: None,
            text: TEXT.to_owned(),
            root: toml::from_str::<Spanned<Node>>(TEXT).ok(),
        }
    }

    #[test]
    fn locates_values_inside_arrays_of_tables() {
        let m = map();
        let at = m.locate(&[
            Seg::Key("operator"),
            Seg::Index(0),
            Seg::Key("inputs"),
            Seg::Index(1),
        ]);
        assert_eq!(at.map(|l| (l.line, l.column)), Some((6, 17)));
        let at = m.locate(&[Seg::Key("operator"), Seg::Index(1), Seg::Key("id")]);
        assert_eq!(at.map(|l| (l.line, l.column)), Some((9, 6)));
    }

    #[test]
    fn missing_path_falls_back_to_the_enclosing_item() {
        let m = map();
        let at = m.locate(&[Seg::Key("operator"), Seg::Index(1), Seg::Key("key")]);
        assert_eq!(at.map(|l| l.line), Some(8));
    }

    #[test]
    fn syntax_error_carries_its_line() {
        let err = parse_toml("[[topic]]\nname = \"a\"\npartitions = = 3\n", None)
            .expect_err("syntax error");
        match err {
            Error::Parse { at: Some(loc), .. } => assert_eq!(loc.line, 3),
            other => panic!("expected Parse with a location, got {other:?}"),
        }
    }
}
