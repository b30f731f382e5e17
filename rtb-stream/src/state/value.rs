//! [`ValueStore`]: one typed value with a dirty flag (operator-level counters, a last-seen watermark, …).

use serde::{de::DeserializeOwned, Serialize};

use super::{StateScope, WriteBatch};
use crate::codec::{Bincode, Codec};
use crate::error::{Error, Result};

/// A single typed value, restored when opened and written back by [`ValueStore::flush_into`] only when it
/// changed since the last flush. It shares its key with [`StateScope::read_value`] /
/// [`StateScope::write_value`] of the same name.
///
/// ```
/// use rtb_stream::state::{StateScope, WriteBatch};
///
/// let scope = StateScope::in_memory();
/// let mut seen = scope.value::<u64>("records-seen").expect("open");
/// *seen.get_mut() += 3;
/// let mut batch = WriteBatch::new();
/// seen.flush_into(&mut batch).expect("encode");
/// scope.backend().apply(batch).expect("commit");
/// assert_eq!(*scope.value::<u64>("records-seen").expect("reopen").get(), 3);
/// ```
#[derive(Debug)]
pub struct ValueStore<V> {
    name: String,
    /// The backend key; `None` for a transient value.
    key: Option<Vec<u8>>,
    value: V,
    dirty: bool,
}

impl<V: Serialize + DeserializeOwned> ValueStore<V> {
    /// Opens value `name` in `scope`: the committed value, or `V::default()` if none was committed.
    pub fn open(scope: &StateScope, name: &str) -> Result<Self>
    where
        V: Default,
    {
        Self::open_or_else(scope, name, V::default)
    }

    /// Opens value `name` in `scope`: the committed value, or `init()` if none was committed. The initial
    /// value is not written until it is changed.
    pub fn open_or_else(scope: &StateScope, name: &str, init: impl FnOnce() -> V) -> Result<Self> {
        let key = scope.store_prefix(name);
        let value = match scope.backend().get(&key)? {
            Some(bytes) => Bincode
                .decode(&bytes)
                .map_err(|reason| Error::StateDecode { store: name.to_string(), reason })?,
            None => init(),
        };
        Ok(Self { name: name.to_string(), key: Some(key), value, dirty: false })
    }

    /// A value that lives only in memory; [`Self::flush_into`] writes nothing for it.
    pub fn transient(name: &str, value: V) -> Self {
        Self { name: name.to_string(), key: None, value, dirty: false }
    }

    /// The value's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads the value.
    pub fn get(&self) -> &V {
        &self.value
    }

    /// Mutable access; marks the value changed.
    pub fn get_mut(&mut self) -> &mut V {
        self.dirty = true;
        &mut self.value
    }

    /// Replaces the value; returns the old one.
    pub fn set(&mut self, value: V) -> V {
        self.dirty = true;
        std::mem::replace(&mut self.value, value)
    }

    /// Changes the value in place with `f` and returns what `f` returns; marks the value changed.
    pub fn update<R>(&mut self, f: impl FnOnce(&mut V) -> R) -> R {
        f(self.get_mut())
    }

    /// Whether the value changed since the last flush.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Adds the value to `batch` if it changed since the last flush, and marks it clean. On error `batch`
    /// is unchanged and the value stays dirty.
    pub fn flush_into(&mut self, batch: &mut WriteBatch) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(key) = &self.key {
            let bytes = Bincode
                .encode(&self.value)
                .map_err(|reason| Error::StateEncode { store: self.name.clone(), reason })?;
            batch.put(key.clone(), bytes);
        }
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit<V: Serialize + DeserializeOwned>(scope: &StateScope, v: &mut ValueStore<V>) -> usize {
        let mut b = WriteBatch::new();
        v.flush_into(&mut b).expect("flush");
        let ops = b.len();
        scope.backend().apply(b).expect("apply");
        ops
    }

    #[test]
    fn absent_value_opens_as_default_and_is_not_written_until_changed() {
        let scope = StateScope::in_memory();
        let mut v: ValueStore<u64> = scope.value("n").expect("open");
        assert_eq!(*v.get(), 0);
        assert!(!v.is_dirty());
        assert_eq!(commit(&scope, &mut v), 0, "an unchanged value writes nothing");
        assert_eq!(scope.read_value::<u64>("n").expect("read"), None);
    }

    #[test]
    fn changes_survive_reopen_only_after_commit() {
        let scope = StateScope::in_memory().child("task");
        let mut v: ValueStore<(u64, String)> =
            ValueStore::open_or_else(&scope, "last", || (7, "init".into())).expect("open");
        assert_eq!(v.get(), &(7, "init".to_string()));
        v.get_mut().0 += 1;
        assert!(v.is_dirty());
        let before: ValueStore<(u64, String)> = scope.value("last").expect("open");
        assert_eq!(before.get(), &(0, String::new()), "not committed yet");
        assert_eq!(commit(&scope, &mut v), 1);
        assert!(!v.is_dirty());
        assert_eq!(commit(&scope, &mut v), 0, "clean after a commit");
        let old = v.set((9, "nine".into()));
        assert_eq!(old, (8, "init".to_string()));
        assert_eq!(v.update(|x| std::mem::take(&mut x.1)), "nine");
        commit(&scope, &mut v);
        let after: ValueStore<(u64, String)> = scope.value("last").expect("reopen");
        assert_eq!(after.get(), &(9, String::new()));
        assert_eq!(scope.read_value::<(u64, String)>("last").expect("read"), Some((9, String::new())));
    }

    #[test]
    fn a_value_of_the_wrong_type_is_a_decode_error() {
        let scope = StateScope::in_memory();
        let mut b = WriteBatch::new();
        scope.write_value("v", &"not a number".to_string(), &mut b).expect("write");
        scope.backend().apply(b).expect("apply");
        let err = scope.value::<u8>("v").expect_err("wrong type");
        assert!(matches!(&err, Error::StateDecode { store, .. } if store == "v"), "{err}");
    }

    #[test]
    fn transient_value_writes_nothing() {
        let mut v = ValueStore::transient("t", 1_u32);
        *v.get_mut() += 1;
        let mut b = WriteBatch::new();
        v.flush_into(&mut b).expect("flush");
        assert!(b.is_empty());
        assert!(!v.is_dirty());
        assert_eq!(*v.get(), 2);
        assert_eq!(v.name(), "t");
    }

    #[test]
    fn same_name_in_different_scopes_is_separate() {
        let scope = StateScope::in_memory();
        let mut a: ValueStore<u32> = scope.child("a").value("n").expect("open");
        a.set(1);
        commit(&scope, &mut a);
        assert_eq!(*scope.child("b").value::<u32>("n").expect("open").get(), 0);
        assert_eq!(*scope.value::<u32>("n").expect("open").get(), 0);
    }
}
