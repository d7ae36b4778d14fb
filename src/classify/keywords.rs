//! The keyword baseline every report is measured against: a reply is Closed when it contains a
//! concluding phrase ("fixed in", "duplicate of", "closing", ...) and no sign that work goes on
//! (a question mark, "will", "once", "let me", ...). Written from how maintainers talk, not fitted
//! to any data file; it is the bar the model must clear.

use super::Label;

/// Phrases that conclude a conversation.
const CLOSING: &[&str] = &[
    "fixed in",
    "fixed by",
    "fixed on",
    "fixed as of",
    "fixed now",
    "is fixed",
    "been fixed",
    "resolved",
    "released in",
    "released as",
    "shipped in",
    "available in",
    "landed in",
    "duplicate",
    "dup of",
    "dupe of",
    "won't fix",
    "wont fix",
    "wontfix",
    "will not fix",
    "working as intended",
    "works as intended",
    "as designed",
    "closing",
    "closed",
    "close this",
    "done",
    "should work now",
    "should be fine now",
    "all set",
    "you're set",
    "you're good",
    "glad it works",
    "glad that worked",
    "no longer",
    "not a bug",
    "not planned",
    "out of scope",
];

/// Signs that the team is still on it, which override a closing phrase ("will be fixed in 2.0").
const OPEN: &[&str] = &[
    "?",
    "will ",
    "we'll",
    "i'll",
    "once ",
    "looking into",
    "look into",
    "take a look",
    "taking a look",
    "let me",
    "investigating",
    "not yet",
    "reopen",
    "next week",
    "next release",
    "working on",
];

/// How many cue features [`cues`] returns.
pub const N_CUES: usize = 3;

/// The rule's evidence as features a head may read beside the embedding (a sentence embedding
/// mostly encodes topic; these carry the function words that decide status): a closing phrase,
/// a sign of ongoing work, and the rule's verdict. Each is 0 or 1.
pub fn cues(text: &str) -> [f32; N_CUES] {
    let (closing, open) = evidence(text);
    [
        f32::from(u8::from(closing)),
        f32::from(u8::from(open)),
        f32::from(u8::from(closing && !open)),
    ]
}

fn evidence(text: &str) -> (bool, bool) {
    let t = text.to_lowercase().replace('’', "'");
    // "let me know if it isn't" invites a confirmation after a fix: under the labelling rule that
    // is not ongoing work, unlike "let me check".
    let t = t
        .replace("let me know", "tell me")
        .replace("let us know", "tell us");
    (
        CLOSING.iter().any(|k| t.contains(k)),
        OPEN.iter().any(|k| t.contains(k)),
    )
}

pub fn predict(text: &str) -> Label {
    let (closing, open) = evidence(text);
    if closing && !open {
        Label::Closed
    } else {
        Label::InProgress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catches_the_obvious_cases() {
        assert_eq!(predict("Fixed in 2.3."), Label::Closed);
        assert_eq!(predict("Dup of #123."), Label::Closed);
        assert_eq!(predict("Taking a look"), Label::InProgress);
        assert_eq!(predict("This will be fixed in 2.0"), Label::InProgress);
        assert_eq!(predict("can you send the logs?"), Label::InProgress);
        assert_eq!(predict("Fixed in 1.4, let me know if it isn't"), Label::Closed);
        assert_eq!(predict("Let me check with the team"), Label::InProgress);
    }
}
