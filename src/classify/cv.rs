//! Model choice by cross-validation over the real replies, grouped by repository: the rows of the
//! training files that carry a `url` are split into `k` folds by a hash of their repository
//! (`owner/repo`), so one repository's replies are never on both sides of a fold; rows without a
//! `url` (hand-written) are always trained on. Each head is trained `k` times, early-stopped on the
//! held-out fold, and scored on the pooled out-of-fold predictions; the winner's epoch count (the
//! median of its folds' best epochs) and its temperature (fitted on the out-of-fold logits) are
//! then used to train it once on every row. The dev file is only scored, never used to choose.

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::fit::{train_head_weighted, HeadConfig, Trained};
use super::head::{prediction, Head};
use super::metrics::Metrics;
use super::{Label, StatusError};

/// `owner/repo` (lowercased) of a `https://github.com/owner/repo/...` URL; `None` for anything
/// else.
pub fn repository(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let mut parts = rest.split('/');
    let (_host, owner, repo) = (parts.next()?, parts.next()?, parts.next()?);
    if owner.is_empty() || repo.is_empty() {
        return None;
    }
    Some(format!("{owner}/{repo}").to_lowercase())
}

/// The fold (`0..k`) of a repository: the first 8 bytes of sha256(`owner/repo`) modulo `k`.
/// (`scripts/split_real_status.py` splits train from dev with sha1, so the folds do not line up
/// with that split.)
pub fn fold_of(repository: &str, k: usize) -> usize {
    let h = Sha256::digest(repository.as_bytes());
    let v = u64::from_be_bytes(h[..8].try_into().expect("8 bytes"));
    (v % k.max(1) as u64) as usize
}

/// One head's cross-validation.
#[derive(Debug, Clone)]
pub struct CvResult {
    /// Row indices of the held-out rows, in the order of `logits`.
    pub rows: Vec<usize>,
    /// Out-of-fold logits of those rows.
    pub logits: Vec<[f32; 2]>,
    /// The best epoch of each fold (lowest held-out loss).
    pub best_epochs: Vec<usize>,
    /// Out-of-fold metrics at temperature 1.
    pub metrics: Metrics,
    /// Mean out-of-fold negative log-likelihood at temperature 1.
    pub loss: f64,
    /// Each fold's head (trained without that fold, early-stopped on it), in fold order.
    pub heads: Vec<Head>,
}

impl CvResult {
    /// The epoch count for the final training: the median of the folds' best epochs (the lower
    /// middle one for an even count).
    pub fn epochs(&self) -> usize {
        let mut e = self.best_epochs.clone();
        e.sort_unstable();
        e.get(e.len().saturating_sub(1) / 2).copied().unwrap_or(1).max(1)
    }
}

/// Fold `f`'s held-out rows (`folds[i] == Some(f)`) and kept rows (every other row, including
/// the rows in no fold), each in row order.
pub fn split(folds: &[Option<usize>], f: usize) -> (Vec<usize>, Vec<usize>) {
    (0..folds.len()).partition(|&i| folds[i] == Some(f))
}

fn check_rows(f: usize, x: &[Vec<f32>], folds: &[Option<usize>]) -> Result<(), StatusError> {
    if x.len() == folds.len() {
        return Ok(());
    }
    Err(StatusError::Other(format!(
        "cross-validation: fold {f} has {} feature rows for {} rows",
        x.len(),
        folds.len()
    )))
}

/// Per fold, features of every row computed by something tuned on that fold's kept rows only:
/// `tune(f, kept)` gets fold `f`'s kept rows ([`split`]) and returns one feature row per row of
/// `folds`; a held row of fold `f` is never among them. Empty for a fold without rows. Used to
/// cross-validate fine-tuned encoder layers: the held rows' features come from layers that
/// never saw them.
pub fn tune_per_fold<F>(
    folds: &[Option<usize>],
    k: usize,
    mut tune: F,
) -> Result<Vec<Vec<Vec<f32>>>, StatusError>
where
    F: FnMut(usize, &[usize]) -> Result<Vec<Vec<f32>>, StatusError>,
{
    (0..k)
        .map(|f| {
            let (held, kept) = split(folds, f);
            if held.is_empty() {
                return Ok(Vec::new());
            }
            let x = tune(f, &kept)?;
            check_rows(f, &x, folds)?;
            Ok(x)
        })
        .collect()
}

/// One fold's head: trained on the kept rows of `x`, early-stopped and scored on the held rows
/// (`held_kept` from [`split`]).
pub fn fold_head(
    x: &[Vec<f32>],
    y: &[Label],
    w: &[f32],
    (held, kept): (&[usize], &[usize]),
    cfg: &HeadConfig,
    seed: u64,
    progress: &ProgressBar,
) -> Result<Trained, StatusError> {
    let pick = |idx: &[usize]| -> Vec<Vec<f32>> { idx.iter().map(|&i| x[i].clone()).collect() };
    train_head_weighted(
        &pick(kept),
        &kept.iter().map(|&i| y[i]).collect::<Vec<_>>(),
        &kept.iter().map(|&i| w[i]).collect::<Vec<_>>(),
        &pick(held),
        &held.iter().map(|&i| y[i]).collect::<Vec<_>>(),
        cfg,
        seed,
        progress,
    )
}

/// Cross-validates one head. `folds[i]` is row `i`'s fold, `None` for rows always trained on.
/// Fold `f`'s head is trained and scored on the rows of `x_of(f)`: the same features for every
/// fold (`|_| x`), or features that depend on the fold (embeddings through layers tuned without
/// fold `f`, from [`tune_per_fold`]).
#[allow(clippy::too_many_arguments)]
pub fn cross_validate<'a>(
    x_of: impl Fn(usize) -> &'a [Vec<f32>],
    y: &[Label],
    w: &[f32],
    folds: &[Option<usize>],
    k: usize,
    cfg: &HeadConfig,
    seed: u64,
    progress: &ProgressBar,
) -> Result<CvResult, StatusError> {
    if y.len() != folds.len() || w.len() != folds.len() {
        return Err(StatusError::Other(
            "cross-validation: rows, labels, weights and folds differ in length".into(),
        ));
    }
    let mut out = CvResult {
        rows: Vec::new(),
        logits: Vec::new(),
        best_epochs: Vec::new(),
        metrics: Metrics::compute(&[], &[]),
        loss: 0.0,
        heads: Vec::new(),
    };
    for f in 0..k {
        let (held, kept) = split(folds, f);
        if held.is_empty() {
            continue;
        }
        let x = x_of(f);
        check_rows(f, x, folds)?;
        let t = fold_head(x, y, w, (&held, &kept), cfg, seed, progress)?;
        out.best_epochs.push(t.best_epoch);
        out.rows.extend(&held);
        out.logits.extend(t.dev_logits);
        out.heads.push(t.head);
    }
    if out.rows.is_empty() {
        return Err(StatusError::Other(
            "cross-validation: no training row has a url to put in a fold".into(),
        ));
    }
    let gold: Vec<Label> = out.rows.iter().map(|&i| y[i]).collect();
    let pred: Vec<Label> = out.logits.iter().map(|l| prediction(l, 1.0).label).collect();
    out.metrics = Metrics::compute(&gold, &pred);
    out.loss = out
        .logits
        .iter()
        .zip(&gold)
        .map(|(l, g)| -f64::from(prediction(l, 1.0).score(*g)).max(1e-12).ln())
        .sum::<f64>()
        / gold.len() as f64;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_and_folds() {
        assert_eq!(
            repository("https://github.com/Owner/Repo/issues/12").as_deref(),
            Some("owner/repo")
        );
        assert_eq!(repository("https://github.com/owner").as_deref(), None);
        assert_eq!(repository("not a url"), None);
        // Stable, in range, and spread over the folds.
        let folds: Vec<usize> = (0..200).map(|i| fold_of(&format!("o/r{i}"), 5)).collect();
        assert_eq!(
            folds,
            (0..200)
                .map(|i| fold_of(&format!("o/r{i}"), 5))
                .collect::<Vec<_>>()
        );
        for f in 0..5 {
            let n = folds.iter().filter(|&&x| x == f).count();
            assert!((20..=60).contains(&n), "fold {f} has {n} of 200");
        }
    }

    #[test]
    fn a_held_row_is_never_in_its_folds_tuning_set() {
        // 40 rows: 30 in 3 folds by repository, 10 hand-written (no fold).
        let folds: Vec<Option<usize>> = (0..40)
            .map(|i| (i < 30).then(|| fold_of(&format!("o/r{}", i % 7), 3)))
            .collect();
        let mut seen = Vec::new();
        let x = tune_per_fold(&folds, 3, |f, kept| {
            seen.push((f, kept.to_vec()));
            // Features that say which fold's tuning produced them.
            Ok(vec![vec![f as f32; crate::embed::DIM]; folds.len()])
        })
        .unwrap();
        assert_eq!(seen.len(), (0..3).filter(|f| folds.contains(&Some(*f))).count());
        for (f, kept) in &seen {
            for (i, fold) in folds.iter().enumerate() {
                // Held rows of fold f: never tuned on; every other row (other folds, no fold): tuned on.
                assert_eq!(
                    kept.contains(&i),
                    *fold != Some(*f),
                    "row {i} fold {fold:?}, tuning fold {f}"
                );
            }
        }
        // Fold f's head reads fold f's features, for exactly fold f's held rows.
        let y: Vec<Label> = (0..40).map(|i| Label::ALL[i % 2]).collect();
        let asked = std::cell::RefCell::new(Vec::new());
        let cfg = HeadConfig {
            max_epochs: 2,
            ..super::super::fit::default_variants()[0]
        };
        let r = cross_validate(
            |f| {
                asked.borrow_mut().push(f);
                x[f].as_slice()
            },
            &y,
            &[1.0; 40],
            &folds,
            3,
            &cfg,
            1,
            &ProgressBar::hidden(),
        )
        .unwrap();
        let used: Vec<usize> = seen.iter().map(|(f, _)| *f).collect();
        assert_eq!(*asked.borrow(), used);
        let held: Vec<usize> = used.iter().flat_map(|&f| split(&folds, f).0).collect();
        assert_eq!(r.rows, held);
        assert_eq!(r.heads.len(), used.len());
    }

    #[test]
    fn epochs_is_the_lower_median() {
        let r = |e: Vec<usize>| CvResult {
            rows: vec![],
            logits: vec![],
            best_epochs: e,
            metrics: Metrics::compute(&[], &[]),
            loss: 0.0,
            heads: vec![],
        };
        assert_eq!(r(vec![9, 3, 5]).epochs(), 5);
        assert_eq!(r(vec![8, 2, 4, 6]).epochs(), 4);
        assert_eq!(r(vec![]).epochs(), 1);
    }
}
