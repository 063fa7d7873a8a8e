//! The in-memory replicated log: entries after a base (index 0 until snapshots compact it).

use alloc::vec::Vec;

use crate::types::{Entry, Index, Term};

/// The log as the core sees it. Entry `base_index + 1 + k` is `entries[k]`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Log {
    base_index: Index,
    base_term: Term,
    entries: Vec<Entry>,
}

impl Log {
    /// A log holding `entries` from index 1 on.
    #[cfg(test)]
    pub(crate) fn from_entries(entries: Vec<Entry>) -> Self {
        Self::with_base(0, 0, entries)
    }

    /// A log whose entries follow a snapshot ending at `(base_index, base_term)`.
    pub(crate) fn with_base(base_index: Index, base_term: Term, entries: Vec<Entry>) -> Self {
        Self {
            base_index,
            base_term,
            entries,
        }
    }

    /// The index of the last entry covered by the snapshot (0 without one).
    pub(crate) fn base_index(&self) -> Index {
        self.base_index
    }

    /// Makes `(index, term)` the new base: entries up to `index` are dropped. When the log holds
    /// that very entry, the entries after it are kept (they match); otherwise the whole log is
    /// discarded. Returns whether the suffix was kept.
    pub(crate) fn compact_to(&mut self, index: Index, term: Term) -> bool {
        if index <= self.base_index {
            return true;
        }
        let keep = self.term(index) == Some(term);
        if keep {
            let drop = self.position(index) + 1;
            self.entries.drain(..drop);
        } else {
            self.entries.clear();
        }
        self.base_index = index;
        self.base_term = term;
        keep
    }

    pub(crate) fn last_index(&self) -> Index {
        self.base_index + self.entries.len() as Index
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.last().map_or(self.base_term, |e| e.term)
    }

    /// The term of the entry at `index`, if the log knows it (the base counts).
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index == self.base_index {
            return Some(self.base_term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub(crate) fn entry(&self, index: Index) -> Option<&Entry> {
        let offset = index.checked_sub(self.base_index + 1)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    fn position(&self, index: Index) -> usize {
        (index - self.base_index - 1) as usize
    }

    /// Up to `max_count` entries from `from` on, stopping before `max_bytes` of payload is
    /// exceeded (but always at least one entry when there is one).
    pub(crate) fn slice(&self, from: Index, max_count: usize, max_bytes: usize) -> Vec<Entry> {
        if from > self.last_index() || from <= self.base_index {
            return Vec::new();
        }
        let start = self.position(from);
        let mut bytes = 0usize;
        let mut out = Vec::with_capacity(max_count.min(self.entries.len() - start));
        for entry in self.entries[start..].iter().take(max_count) {
            bytes = bytes.saturating_add(entry.data.len());
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        out
    }

    /// The entries `from..=to` (clamped to what the log holds).
    pub(crate) fn range(&self, from: Index, to: Index) -> Vec<Entry> {
        let from = from.max(self.base_index + 1);
        let to = to.min(self.last_index());
        if from > to {
            return Vec::new();
        }
        self.entries[self.position(from)..=self.position(to)].to_vec()
    }

    /// Makes room for `additional` more entries.
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.entries.reserve(additional);
    }

    pub(crate) fn append(&mut self, entry: Entry) {
        self.entries.push(entry);
    }

    /// Removes every entry at `index` and after.
    pub(crate) fn truncate_from(&mut self, index: Index) {
        if index > self.base_index {
            let keep = self.position(index);
            self.entries.truncate(keep);
        }
    }

    /// The first index holding `term`, given that `index` holds it. Terms never decrease along
    /// the log, so this is a binary search.
    pub(crate) fn first_index_of_term(&self, term: Term, index: Index) -> Index {
        let upto = self.position(index.min(self.last_index()).max(self.base_index + 1));
        let first = self.entries[..upto].partition_point(|e| e.term < term);
        self.base_index + 1 + first as Index
    }

    /// The last index holding `term`, if any entry does.
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<Index> {
        let after = self.entries.partition_point(|e| e.term <= term);
        if after == 0 {
            return (self.base_term == term && self.base_index > 0).then_some(self.base_index);
        }
        (self.entries[after - 1].term == term).then(|| self.base_index + after as Index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn log_of_terms(terms: &[Term]) -> Log {
        Log::from_entries(
            terms
                .iter()
                .map(|&t| Entry::command(t, vec![t as u8]))
                .collect(),
        )
    }

    #[test]
    fn terms_and_bounds() {
        let log = log_of_terms(&[1, 1, 2, 3, 3]);
        assert_eq!(log.last_index(), 5);
        assert_eq!(log.last_term(), 3);
        assert_eq!(log.term(0), Some(0));
        assert_eq!(log.term(3), Some(2));
        assert_eq!(log.term(6), None);
        assert_eq!(log.term(u64::MAX), None);
    }

    #[test]
    fn term_searches() {
        let log = log_of_terms(&[1, 1, 2, 3, 3, 3, 5]);
        assert_eq!(log.first_index_of_term(3, 6), 4);
        assert_eq!(log.first_index_of_term(1, 2), 1);
        assert_eq!(log.last_index_of_term(3), Some(6));
        assert_eq!(log.last_index_of_term(4), None);
        assert_eq!(log.last_index_of_term(5), Some(7));
        assert_eq!(log.last_index_of_term(0), None);
    }

    #[test]
    fn slicing_respects_limits() {
        let log = log_of_terms(&[1, 1, 1, 1]);
        assert_eq!(log.slice(2, 10, 100).len(), 3);
        assert_eq!(log.slice(2, 2, 100).len(), 2);
        assert_eq!(log.slice(1, 10, 0).len(), 1);
        assert!(log.slice(5, 10, 100).is_empty());
        assert!(log.slice(0, 10, 100).is_empty());
        assert_eq!(log.range(2, 9).len(), 3);
    }

    #[test]
    fn compaction_keeps_a_matching_suffix_only() {
        let mut log = log_of_terms(&[1, 1, 2, 3]);
        assert!(log.compact_to(2, 1));
        assert_eq!((log.base_index(), log.last_index()), (2, 4));
        assert_eq!(log.term(2), Some(1));
        assert_eq!(log.term(1), None);
        assert_eq!(log.first_index_of_term(2, 3), 3);
        assert!(!log.compact_to(4, 9));
        assert_eq!(
            (log.base_index(), log.last_index(), log.last_term()),
            (4, 4, 9)
        );
        assert!(log.slice(4, 10, 100).is_empty());
        assert!(log.compact_to(3, 1), "an older base changes nothing");
        assert_eq!(log.base_index(), 4);
    }

    #[test]
    fn truncation() {
        let mut log = log_of_terms(&[1, 2, 3]);
        log.truncate_from(2);
        assert_eq!(log.last_index(), 1);
        log.truncate_from(0);
        assert_eq!(log.last_index(), 1);
    }
}
