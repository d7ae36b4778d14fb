//! A bounded, process-local cache of stored message embeddings, by message id.
//!
//! Every ingested message reads its channel's context (about a hundred stored messages, each with
//! a 384-float embedding). Shipping those embeddings out of the database for every message was
//! most of an import's writer time (hex and JSON on SQLite, bytea rows on PostgreSQL), although
//! nearly all of them were read for the previous message too, or written by this process a moment
//! before. The context queries now return only whether a row has an embedding; the embeddings come
//! from here, and only the ones missing are fetched (one query by id).
//!
//! An entry is keyed by message id and checked against the row's text: an edit rewrites a message's
//! text and embedding together, so a changed text is a miss and the new embedding is fetched. Two
//! generations bound the memory: when the current one is full it becomes the previous one (the
//! older previous one is dropped), and a hit in the previous generation moves the entry back.

use super::rows::ContextRow;
use super::{embedding_from_bytes, StoreError};
use crate::domain::{ChannelContext, ContextMessage};
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

/// Entries per generation: about 1.6 KB each (384 floats), so at most ~13 MB for both.
const GENERATION: usize = 4096;

#[derive(Clone)]
struct Entry {
    text: u64,
    embedding: Arc<[f32]>,
}

#[derive(Default)]
struct Generations {
    current: HashMap<String, Entry>,
    previous: HashMap<String, Entry>,
}

impl Generations {
    fn insert(&mut self, id: String, entry: Entry) {
        if self.current.len() >= GENERATION && !self.current.contains_key(&id) {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(id, entry);
    }
}

#[derive(Default)]
pub struct EmbeddingCache {
    inner: Mutex<Generations>,
}

fn text_key(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

impl EmbeddingCache {
    /// The cached embedding of message `id`, if its text is still `text`.
    pub fn get(&self, id: &str, text: &str) -> Option<Arc<[f32]>> {
        let key = text_key(text);
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = g.current.get(id) {
            return (e.text == key).then(|| e.embedding.clone());
        }
        let e = g.previous.remove(id)?;
        let hit = (e.text == key).then(|| e.embedding.clone());
        if hit.is_some() {
            g.insert(id.to_string(), e);
        }
        hit
    }

    /// Remembers the embedding stored with message `id` and its `text`.
    pub fn put(&self, id: &str, text: &str, embedding: Arc<[f32]>) {
        let entry = Entry {
            text: text_key(text),
            embedding,
        };
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.insert(id.to_string(), entry);
    }

    /// The ids among `rows` whose embedding is stored but not cached for their current text.
    pub(super) fn misses<'r>(&self, rows: impl IntoIterator<Item = &'r ContextRow>) -> Vec<String> {
        let mut seen = HashSet::new();
        rows.into_iter()
            .filter(|r| r.has_embedding && self.get(&r.id, &r.text).is_none())
            .filter(|r| seen.insert(r.id.as_str()))
            .map(|r| r.id.clone())
            .collect()
    }

    /// Caches the embeddings just read for `rows` (`fetched`: message id, little-endian f32
    /// bytes) and returns them by id.
    fn remember<'r>(
        &self,
        rows: impl IntoIterator<Item = &'r ContextRow>,
        fetched: Vec<(String, Vec<u8>)>,
    ) -> HashMap<String, Arc<[f32]>> {
        let texts: HashMap<&str, &str> = rows
            .into_iter()
            .map(|r| (r.id.as_str(), r.text.as_str()))
            .collect();
        let mut out = HashMap::with_capacity(fetched.len());
        for (id, bytes) in fetched {
            let Some(v) = embedding_from_bytes(&bytes) else {
                continue;
            };
            let v: Arc<[f32]> = v.into();
            if let Some(text) = texts.get(id.as_str()) {
                self.put(&id, text, v.clone());
            }
            out.insert(id, v);
        }
        out
    }

    /// The channel context from its three lists of rows, each oldest first, with the embeddings
    /// in `fetched` (the rows [`Self::misses`] named, just read: message id, little-endian f32
    /// bytes; cached here) or in this cache.
    pub(super) fn context(
        &self,
        recent: Vec<ContextRow>,
        thread: Vec<ContextRow>,
        open: Vec<ContextRow>,
        fetched: Vec<(String, Vec<u8>)>,
    ) -> Result<ChannelContext, StoreError> {
        let fetched = self.remember(recent.iter().chain(&thread).chain(&open), fetched);
        Ok(ChannelContext {
            recent: self.resolve(recent, &fetched)?,
            thread: self.resolve(thread, &fetched)?,
            open: self.resolve(open, &fetched)?,
        })
    }

    /// The context rows as the domain's messages, oldest first, each with its embedding from
    /// `fetched` or this cache.
    fn resolve(
        &self,
        rows: Vec<ContextRow>,
        fetched: &HashMap<String, Arc<[f32]>>,
    ) -> Result<Vec<ContextMessage>, StoreError> {
        let mut out = rows
            .into_iter()
            .map(|r| {
                let embedding = if r.has_embedding {
                    fetched
                        .get(&r.id)
                        .cloned()
                        .or_else(|| self.get(&r.id, &r.text))
                        .map(|v| v.to_vec())
                } else {
                    None
                };
                r.into_domain(embedding)
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| a.ts.cmp(&b.ts));
        Ok(out)
    }

    /// How many entries the cache holds (both generations).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.current.len() + g.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(x: f32) -> Arc<[f32]> {
        vec![x; 4].into()
    }

    #[test]
    fn a_hit_needs_the_same_text() {
        let c = EmbeddingCache::default();
        c.put("m1", "hello", v(1.0));
        assert_eq!(c.get("m1", "hello").as_deref(), Some(&[1.0; 4][..]));
        assert!(c.get("m1", "hello, edited").is_none());
        assert!(c.get("m2", "hello").is_none());
    }

    #[test]
    fn memory_is_bounded_and_recent_entries_survive() {
        let c = EmbeddingCache::default();
        for i in 0..3 * GENERATION {
            c.put(&format!("m{i}"), "t", v(i as f32));
            // One early entry keeps being read, so it keeps coming back to the current generation.
            assert!(c.get("m0", "t").is_some(), "m0 lost after {i} inserts");
        }
        assert!(c.len() <= 2 * GENERATION);
        assert!(c.get("m1", "t").is_none(), "an entry nobody read is dropped");
        let last = format!("m{}", 3 * GENERATION - 1);
        assert_eq!(
            c.get(&last, "t").as_deref(),
            Some(&[(3 * GENERATION - 1) as f32; 4][..])
        );
    }
}
