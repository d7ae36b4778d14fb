//! Lexical cue features a status head reads beside the sentence embedding.
//!
//! A sentence embedding mostly encodes a reply's topic; whether a reply concludes a conversation
//! is carried by function words ("is out", "let me know if", "could you", "will"). Each cue is a
//! 0/1 feature: the keyword rule's evidence ([`keywords`]), one feature per phrase group below
//! (present when any phrase of the group occurs as whole words), and a few shape features.
//! The groups follow the kinds of replies in `training-data/status/README.md`; they were written
//! from how support staff and maintainers talk, not fitted to a data file, and the head learns
//! how much each one weighs.

use super::keywords;

/// Phrase groups, each one feature. Phrases are matched on whole words of the lower-cased text.
const GROUPS: &[(&str, &[&str])] = &[
    (
        "fixed",
        &[
            "fixed",
            "resolved",
            "patched",
            "solved",
            "sorted out",
            "addressed",
            "corrected",
            "repaired",
        ],
    ),
    (
        "shipped",
        &[
            "released",
            "shipped",
            "deployed",
            "published",
            "merged",
            "landed",
            "rolled out",
            "is out",
            "went out",
            "is live",
            "now live",
            "now available",
            "available in",
            "pushed",
            "added in",
            "included in",
            "a new version",
            "new release",
        ],
    ),
    (
        "decision",
        &[
            "duplicate",
            "dup",
            "dupe",
            "won't fix",
            "wont fix",
            "wontfix",
            "will not fix",
            "not planned",
            "as designed",
            "as intended",
            "intended behavior",
            "intended behaviour",
            "expected behavior",
            "expected behaviour",
            "by design",
            "not a bug",
            "invalid",
            "out of scope",
            "no plans",
            "not maintained",
            "no longer maintained",
            "don't maintain",
            "not supported",
            "unsupported",
            "deprecated",
            "not something we",
        ],
    ),
    (
        "redirect",
        &[
            "please open",
            "please use",
            "please file",
            "please post",
            "please ask",
            "please contact",
            "please email",
            "please reach out",
            "moved to",
            "converted",
            "transferred",
            "forum",
            "discussions",
            "stack overflow",
            "stackoverflow",
            "support case",
            "mailing list",
            "another repo",
            "other repo",
            "upstream",
            "new issue",
            "separate issue",
        ],
    ),
    (
        "closing",
        &[
            "closing",
            "closed",
            "close this",
            "close it",
            "closing this",
            "i'll close",
        ],
    ),
    (
        "done",
        &[
            "done",
            "all set",
            "complete",
            "completed",
            "finished",
            "is up",
            "are up",
            "back up",
            "works now",
            "working now",
            "work now",
            "should work",
            "should be fine",
            "good to go",
            "looks good",
            "taken care",
            "all good",
            "up and running",
        ],
    ),
    (
        "wrap_up",
        &[
            "glad",
            "happy to hear",
            "great to hear",
            "good to hear",
            "thanks for confirming",
            "thanks for verifying",
            "thanks for the confirmation",
            "thanks for checking",
            "no worries",
            "you're welcome",
            "anytime",
            "cheers",
            "enjoy",
        ],
    ),
    (
        "inactivity",
        &[
            "stale",
            "inactivity",
            "inactive",
            "no response",
            "haven't heard",
            "no activity",
            "feel free to reopen",
            "reopen if",
            "re open if",
            "reopen it if",
            "open a new",
        ],
    ),
    (
        "invite_confirm",
        &[
            "let me know if",
            "let us know if",
            "let me know how",
            "let us know how",
            "try it",
            "give it a try",
            "give it a go",
            "please check",
            "please confirm",
            "please try",
            "try again",
            "try the latest",
            "upgrade to",
            "update to",
            "should now",
        ],
    ),
    (
        "instruction",
        &[
            "you can",
            "you need to",
            "you should",
            "you'll need",
            "you have to",
            "instead",
            "make sure",
            "set the",
            "use the",
            "just use",
            "the way to",
            "in order to",
        ],
    ),
    (
        "request",
        &[
            "could you",
            "can you",
            "would you",
            "please share",
            "please send",
            "please provide",
            "please attach",
            "please post the",
            "what version",
            "which version",
            "logs",
            "log file",
            "repro",
            "reproduce",
            "reproducible",
            "more details",
            "more information",
            "more info",
            "screenshot",
            "steps to",
            "stack trace",
            "traceback",
        ],
    ),
    (
        "future",
        &[
            "will",
            "we'll",
            "i'll",
            "going to",
            "gonna",
            "plan to",
            "planning to",
            "next release",
            "next version",
            "soon",
            "eventually",
            "in the future",
            "roadmap",
            "later",
            "tomorrow",
            "next week",
            "keep the issue open",
            "keep this open",
            "leave this open",
            "when i get",
            "once",
            "until",
        ],
    ),
    (
        "ongoing",
        &[
            "looking into",
            "look into",
            "take a look",
            "taking a look",
            "investigating",
            "checking",
            "working on",
            "digging",
            "trying to",
            "on it",
            "in progress",
            "still",
            "not yet",
            "haven't",
            "hasn't",
            "pending",
            "waiting",
            "blocked",
            "escalated",
            "let me check",
            "let me look",
            "let me see",
            "let me try",
            "need to",
            "needs to",
        ],
    ),
    (
        "negated_fix",
        &[
            "not working",
            "not fixed",
            "isn't fixed",
            "still broken",
            "still happening",
            "doesn't work",
            "didn't work",
            "not resolved",
            "still see",
            "still get",
            "not work",
        ],
    ),
    (
        "hedge",
        &[
            "might", "maybe", "perhaps", "not sure", "i think", "i guess", "probably", "could be", "may be",
            "seems",
        ],
    ),
    ("thanks", &["thanks", "thank you", "thx", "ty"]),
    ("apology", &["sorry", "apologies", "apologize"]),
];

/// Shape features after the groups: question mark, link, code, @-mention, short, long, `!`.
const SHAPES: usize = 7;

/// How many cue features [`cues`] returns.
pub const N_CUES: usize = keywords::N_CUES + GROUPS.len() + SHAPES;

/// The cue features of a reply, in a fixed order (see the module docs).
pub fn cues(text: &str) -> [f32; N_CUES] {
    let mut out = [0.0f32; N_CUES];
    let rule = keywords::cues(text);
    out[..keywords::N_CUES].copy_from_slice(&rule);
    let words = word_string(text);
    let base = keywords::N_CUES;
    for (i, (_, phrases)) in GROUPS.iter().enumerate() {
        if phrases.iter().any(|p| contains_words(&words, p)) {
            out[base + i] = 1.0;
        }
    }
    let n_words = words.split_whitespace().count();
    let shapes = [
        text.contains('?'),
        text.contains("http://") || text.contains("https://"),
        text.contains('`'),
        text.split_whitespace().any(|w| w.len() > 1 && w.starts_with('@')),
        n_words <= 6,
        n_words >= 60,
        text.contains('!'),
    ];
    let base = base + GROUPS.len();
    for (i, on) in shapes.into_iter().enumerate() {
        out[base + i] = f32::from(u8::from(on));
    }
    out
}

/// The names of the cue features, in [`cues`]' order (for reports).
pub fn names() -> Vec<String> {
    let mut names: Vec<String> = ["rule_closing", "rule_open", "rule_closed"]
        .map(String::from)
        .to_vec();
    names.extend(GROUPS.iter().map(|(n, _)| (*n).to_owned()));
    names.extend(
        [
            "question",
            "link",
            "code",
            "mention",
            "short",
            "long",
            "exclamation",
        ]
        .map(String::from),
    );
    names
}

/// The text as lower-case words separated by single spaces, padded with a space on each side;
/// apostrophes kept inside words ("won't"), everything else a separator.
fn word_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push(' ');
    let mut last_space = true;
    for c in text.chars().flat_map(char::to_lowercase) {
        let c = if c == '’' { '\'' } else { c };
        if c.is_alphanumeric() || c == '\'' {
            out.push(c);
            last_space = false;
        } else if !last_space {
            out.push(' ');
            last_space = true;
        }
    }
    if !last_space {
        out.push(' ');
    }
    out
}

/// True when `phrase` occurs in `words` (from [`word_string`]) as whole words.
fn contains_words(words: &str, phrase: &str) -> bool {
    let mut needle = String::with_capacity(phrase.len() + 2);
    needle.push(' ');
    needle.push_str(phrase.trim());
    needle.push(' ');
    words.contains(&needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(text: &str, group: &str) -> bool {
        let i = names().iter().position(|n| n == group).expect("known cue");
        cues(text)[i] == 1.0
    }

    #[test]
    fn names_match_the_features() {
        assert_eq!(names().len(), N_CUES);
    }

    #[test]
    fn phrases_match_whole_words_only() {
        assert!(on("Done!", "done"));
        assert!(!on("This was abandoned", "done"));
        assert!(on("Version 1.4 is out, let me know if it isn't fixed", "shipped"));
        assert!(on(
            "Version 1.4 is out, let me know if it isn't fixed",
            "invite_confirm"
        ));
        assert!(!on("Version 1.4 is out", "ongoing"));
        assert!(on("Let me check with the team", "ongoing"));
        assert!(on("We won’t fix this", "decision"));
        assert!(!on("This will be wonderful", "decision"));
    }

    #[test]
    fn shapes() {
        assert!(on("can you send the logs?", "question"));
        assert!(on("see https://example.com/x", "link"));
        assert!(on("run `make`", "code"));
        assert!(on("@ana fixed", "mention"));
        assert!(!on("email me @ noon", "mention"));
        assert!(on("ok", "short"));
        assert!(!on(&"word ".repeat(20), "short"));
        assert!(on(&"word ".repeat(60), "long"));
    }
}
