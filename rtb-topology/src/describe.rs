//! `describe`: an execution plan as readable text, and as a Mermaid `flowchart LR` in the shape of SPEC §1
//! (API server → topics → statements and workers → cache and database).

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::plan::{ExecutionPlan, Stage};

/// Output format of `describe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DescribeFormat {
    /// Topics table and one paragraph per stage.
    #[default]
    Text,
    /// A Mermaid `flowchart LR` diagram.
    Mermaid,
}

impl ExecutionPlan {
    /// The plan in the given format.
    pub fn describe(&self, format: DescribeFormat) -> String {
        match format {
            DescribeFormat::Text => self.describe_text(),
            DescribeFormat::Mermaid => self.mermaid(),
        }
    }

    /// The plan as text: a topics table (with each topic's consumer groups), then each stage as
    /// `inputs → operator → outputs / sinks`, repartitions called out with their reason, then the sinks.
    pub fn describe_text(&self) -> String {
        let mut s = String::new();
        let internal = self.topics.iter().filter(|t| t.internal).count();
        let operators = self
            .stages
            .iter()
            .filter(|st| st.repartition.is_none())
            .count();
        let _ = writeln!(
            s,
            "Topology: {} topics (+{internal} internal), {operators} operators in {} stages, {} sinks",
            self.topics.len() - internal,
            self.stages.len(),
            self.sinks.len()
        );
        let rt = &self.runtime;
        let _ = writeln!(
            s,
            "Runtime: data dir {}, commit every {}, at most {} records per poll",
            rt.data_dir.display(),
            rt.commit_interval,
            rt.max_poll_records
        );

        s.push_str("\nTopics\n");
        let groups = self.consumer_groups();
        let rows: Vec<[String; 6]> = self
            .topics
            .iter()
            .map(|t| {
                [
                    t.name.clone(),
                    t.partitions.to_string(),
                    t.retention
                        .map_or_else(|| "forever".to_owned(), |r| r.to_string()),
                    t.key
                        .as_ref()
                        .map_or_else(|| "none".to_owned(), ToString::to_string),
                    if t.internal { "internal" } else { "declared" }.to_owned(),
                    groups
                        .get(t.name.as_str())
                        .map_or_else(|| "-".to_owned(), |g| g.join(", ")),
                ]
            })
            .collect();
        table(
            &mut s,
            [
                "TOPIC",
                "PARTITIONS",
                "RETENTION",
                "KEY",
                "ORIGIN",
                "CONSUMER GROUPS",
            ],
            &rows,
        );

        s.push_str("\nStages\n");
        for (n, st) in self.stages.iter().enumerate() {
            self.describe_stage(&mut s, n + 1, st);
        }

        s.push_str("\nSinks\n");
        let rows: Vec<[String; 3]> = self
            .sinks
            .iter()
            .map(|k| {
                let place = match &k.url {
                    Some(url) => format!("{} {url}", k.backend),
                    None => format!("{} ({})", k.backend, k.embedded_dir(&rt.data_dir).display()),
                };
                [k.name.clone(), k.kind.clone(), place]
            })
            .collect();
        table(&mut s, ["SINK", "KIND", "BACKEND"], &rows);
        s
    }

    fn describe_stage(&self, s: &mut String, n: usize, st: &Stage) {
        let role = match &st.repartition {
            Some(_) => "internal repartition".to_owned(),
            None => format!("{} {}", st.rules.role, st.kind),
        };
        let key = st
            .key
            .as_ref()
            .map_or_else(String::new, |k| format!(", keyed by {k}"));
        let _ = writeln!(
            s,
            "  {n}. {} [group {}, {role}{key}, {} tasks]",
            st.name,
            st.runtime_group(),
            st.partitions
        );
        if let Some(rp) = &st.repartition {
            let from = self.topic(&rp.source).map_or(0, |t| t.partitions);
            let _ = writeln!(
                s,
                "       {} → repartition by {} → {} ({from} → {} partitions, feeds {})",
                rp.source, rp.by, rp.topic, rp.partitions, st.operator
            );
            let _ = writeln!(s, "       reason: {}", rp.reason);
            return;
        }
        let mut targets: Vec<String> = st.outputs.clone();
        targets.extend(st.sinks.iter().map(|k| format!("{k} (sink)")));
        let targets = if targets.is_empty() {
            "nothing".to_owned()
        } else {
            targets.join(", ")
        };
        let _ = writeln!(
            s,
            "       {} → {} → {targets}",
            st.inputs.join(" + "),
            st.name
        );
        if let Some(settings) = st.kind_settings.as_object().filter(|m| !m.is_empty()) {
            let parts: Vec<String> = settings
                .iter()
                .map(|(name, value)| match value {
                    serde_json::Value::String(text) => format!("{name} {text}"),
                    other => format!("{name} {other}"),
                })
                .collect();
            let _ = writeln!(s, "       settings: {}", parts.join(", "));
        }
        let set = &st.settings;
        let _ = writeln!(
            s,
            "       watermark −{}, idle after {}",
            set.max_out_of_orderness, set.idle_timeout
        );
    }

    /// The plan as a Mermaid `flowchart LR`: the API server feeds the external topics; topics feed the
    /// operators, grouped by their kind's role (CPC: statements and workers), through repartition stages
    /// where declared; they write their sinks and produce to topics.
    pub fn mermaid(&self) -> String {
        let mut ids = Ids::default();
        let mut s = String::from("flowchart LR\n");
        s.push_str("    api([API server])\n");

        s.push_str("    subgraph topics [Topics]\n");
        for t in &self.topics {
            let id = ids.node("t", &t.name);
            let key = t
                .key
                .as_ref()
                .map_or_else(|| "no key".to_owned(), |k| format!("key {k}"));
            let _ = writeln!(
                s,
                "        {id}[[\"{}<br/>{} partitions, {key}\"]]",
                t.name, t.partitions
            );
        }
        s.push_str("    end\n");

        // One subgraph per role (`statement`, `worker` ...); a repartition stage sits with its consumer.
        let role_of = |st: &Stage| -> String {
            self.stage(&st.operator).map_or_else(|| st.rules.role.clone(), |o| o.rules.role.clone())
        };
        let mut roles: Vec<String> = Vec::new();
        for st in &self.stages {
            let role = role_of(st);
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        for role in &roles {
            let sub: String = role
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let mut title: Vec<char> = role.chars().collect();
            if let Some(first) = title.first_mut() {
                *first = first.to_ascii_uppercase();
            }
            let title: String = title.into_iter().collect();
            let _ = writeln!(s, "    subgraph {sub}s [{title}s]");
            for st in &self.stages {
                if role_of(st) != *role {
                    continue;
                }
                let id = ids.node("s", &st.name);
                match &st.repartition {
                    Some(rp) => {
                        let _ = writeln!(
                            s,
                            "        {id}{{{{\"repartition {} by {}\"}}}}",
                            rp.source, rp.by
                        );
                    }
                    None => {
                        let _ = writeln!(
                            s,
                            "        {id}[\"{}<br/>{} · group {}\"]",
                            st.name, st.kind, st.group
                        );
                    }
                }
            }
            s.push_str("    end\n");
        }

        s.push_str("    subgraph stores [Stores]\n");
        for k in &self.sinks {
            let id = ids.node("k", &k.name);
            let _ = writeln!(
                s,
                "        {id}[(\"{}<br/>{} · {}\")]",
                k.name,
                k.kind,
                k.backend
            );
        }
        s.push_str("    end\n");

        for t in self.topics.iter().filter(|t| !t.internal && t.external)
        {
            let _ = writeln!(s, "    api --> {}", ids.get("t", &t.name));
        }
        for st in &self.stages {
            let me = ids.get("s", &st.name);
            for input in &st.inputs {
                let _ = writeln!(s, "    {} --> {me}", ids.get("t", input));
            }
            for output in &st.outputs {
                let _ = writeln!(s, "    {me} --> {}", ids.get("t", output));
            }
            for sink in &st.sinks {
                let _ = writeln!(s, "    {me} --> {}", ids.get("k", sink));
            }
            for (kind, what) in &st.rules.reads {
                let read = st
                    .sinks
                    .iter()
                    .find(|k| self.sink(k).is_some_and(|spec| spec.kind == *kind));
                if let Some(sink) = read {
                    let _ = writeln!(s, "    {} -. {what} .-> {me}", ids.get("k", sink));
                }
            }
        }
        s
    }
}

/// Mermaid node ids derived from names (`t_ad_events`), unique even when two names map to one id.
#[derive(Default)]
struct Ids {
    by_name: HashMap<(&'static str, String), String>,
    taken: HashMap<String, usize>,
}

impl Ids {
    fn node(&mut self, prefix: &'static str, name: &str) -> String {
        let base: String = format!("{prefix}_{name}")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let n = self.taken.entry(base.clone()).or_insert(0);
        *n += 1;
        let id = if *n == 1 { base } else { format!("{base}_{n}") };
        self.by_name.insert((prefix, name.to_owned()), id.clone());
        id
    }

    fn get(&mut self, prefix: &'static str, name: &str) -> String {
        match self.by_name.get(&(prefix, name.to_owned())) {
            Some(id) => id.clone(),
            None => self.node(prefix, name),
        }
    }
}

/// Writes a left-aligned table with a header, two spaces of indent and two between columns.
fn table<const N: usize>(s: &mut String, header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: Vec<&str>| {
        let mut out = String::from("  ");
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            out.push_str(cell);
            if i + 1 < N {
                out.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        s.push_str(out.trim_end());
        s.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
