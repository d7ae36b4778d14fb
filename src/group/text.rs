//! Text analysis done once per message: word hashes, the addressed nick, cue words.
//!
//! Hashes are FNV-1a (stable across runs and machines) because they are persisted in channel state.

/// Stable 64-bit FNV-1a hash.
pub fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Punctuation stripped from both ends of a word (so `bob:`, `(bob)` and `@bob` all match `bob`).
fn trim_word(w: &str) -> &str {
    w.trim_matches(|c: char| ":,.!?;()[]{}<>\"'@`".contains(c))
}

/// Normalised form of a nick or Slack user id, as it appears in text.
pub fn nick_key(nick: &str) -> u64 {
    fnv1a(&trim_word(&nick.to_lowercase()))
}

/// A Slack mention `<@U123>` / `<@U123|name>` -> `u123`.
fn slack_mention(w: &str) -> Option<&str> {
    let rest = w.strip_prefix("<@")?;
    let end = rest.find(['>', '|']).unwrap_or(rest.len());
    Some(&rest[..end])
}

// Short function words carry no topic; dropping them makes the overlap feature mean something.
const STOPWORDS: &[&str] = &[
    "the", "and", "you", "for", "are", "but", "not", "can", "have", "has", "was", "with", "that", "this",
    "its", "it's", "what", "how", "any", "all", "just", "get", "there", "then", "will", "your", "from",
    "they", "does", "did", "don't", "i'm", "yes", "try",
];
// First words that typically answer someone (a reply, not a new topic).
const ANSWER_CUES: &[&str] = &[
    "yes", "yeah", "yep", "no", "nope", "try", "it", "that", "sure", "ok", "okay", "thanks", "thank", "thx",
    "np", "because", "then", "well", "you", "use", "maybe", "did", "what", "so",
];
// Words that open a new request.
const GREETING_CUES: &[&str] = &[
    "hi",
    "hello",
    "hey",
    "anyone",
    "anybody",
    "someone",
    "somebody",
    "help",
    "question",
    "howdy",
    "greetings",
    "morning",
    "evening",
    "guys",
    "all",
];

/// What the features need to know about one message's text.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TextInfo {
    /// Hashes of content words (lowercased, trimmed, no stopwords, >= 3 chars), sorted, unique.
    pub words: Vec<u64>,
    /// Hashes of every token in nick form, sorted, unique (to find nicks mentioned anywhere).
    pub tokens: Vec<u64>,
    /// Hash of the first token when it addresses someone (`nick:`, `nick,`, `@nick`, `<@U1>`).
    pub addressee: Option<u64>,
    pub question: bool,
    pub answer_cue: bool,
    pub greeting: bool,
    pub n_tokens: u32,
}

pub fn analyse(text: &str) -> TextInfo {
    let mut info = TextInfo {
        question: text.contains('?'),
        ..TextInfo::default()
    };
    // One buffer for every word's lowercase form (most words are ASCII: no allocation per word).
    let mut buf = String::new();
    for (i, raw) in text.split_whitespace().enumerate() {
        info.n_tokens += 1;
        let lower: &str = if raw.is_ascii() {
            buf.clear();
            buf.push_str(raw);
            buf.make_ascii_lowercase();
            &buf
        } else {
            buf = raw.to_lowercase();
            &buf
        };
        let (key, is_mention) = match slack_mention(&lower) {
            Some(id) => (fnv1a(id), true),
            None => (fnv1a(trim_word(&lower)), false),
        };
        let word = trim_word(&lower);
        if i == 0 {
            let addresses = is_mention
                || raw.ends_with(':')
                || raw.ends_with(',')
                || (raw.starts_with('@') && word.len() > 1);
            if addresses && !word.is_empty() {
                info.addressee = Some(key);
            }
            info.answer_cue = ANSWER_CUES.contains(&word);
            info.greeting = GREETING_CUES.contains(&word);
        } else if i < 3 && GREETING_CUES.contains(&word) {
            info.greeting = true;
        }
        info.tokens.push(key);
        if !is_mention && word.chars().count() >= 3 && !STOPWORDS.contains(&word) {
            info.words.push(fnv1a(word));
        }
    }
    for v in [&mut info.words, &mut info.tokens] {
        v.sort_unstable();
        v.dedup();
    }
    info
}

/// Jaccard overlap of two sorted, unique hash lists.
pub fn jaccard(a: &[u64], b: &[u64]) -> f32 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    inter as f32 / (a.len() + b.len() - inter) as f32
}

pub fn contains(sorted: &[u64], key: u64) -> bool {
    sorted.binary_search(&key).is_ok()
}

/// Dot product with independent accumulators so the compiler vectorises it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_hash_their_lowercase_form_ascii_or_not() {
        for text in [
            "Hello WORLD, @Bob: grub?",
            "Straße ÖL ΣΑΣ: ok",
            "<@U12AB|Bob> LOOK",
        ] {
            let mut tokens: Vec<u64> = text
                .split_whitespace()
                .map(|w| {
                    let l = w.to_lowercase();
                    match slack_mention(&l) {
                        Some(id) => fnv1a(id),
                        None => fnv1a(trim_word(&l)),
                    }
                })
                .collect();
            tokens.sort_unstable();
            tokens.dedup();
            assert_eq!(analyse(text).tokens, tokens, "{text}");
        }
    }

    #[test]
    fn addressee_forms() {
        assert_eq!(analyse("bob: try this").addressee, Some(nick_key("bob")));
        assert_eq!(analyse("Bob, hi").addressee, Some(nick_key("bob")));
        assert_eq!(analyse("@bob hi").addressee, Some(nick_key("bob")));
        assert_eq!(analyse("<@U123|bob> look").addressee, Some(nick_key("U123")));
        assert_eq!(analyse("|trey|, top").addressee, Some(nick_key("|trey|")));
        assert_eq!(analyse("bob try this").addressee, None);
    }

    #[test]
    fn mentions_and_overlap() {
        let a = analyse("does anyone know grub? ask alice");
        assert!(contains(&a.tokens, nick_key("alice")));
        assert!(a.question);
        let b = analyse("grub is installed, know why?");
        assert!(jaccard(&a.words, &b.words) > 0.0);
        assert_eq!(jaccard(&a.words, &[]), 0.0);
    }
}
