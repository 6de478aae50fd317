//! Section 1, per site: criterion's estimates from the `site` bench (benches/site.rs).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::stats::Summary;
use crate::Target;

/// The `site` bench's functions, with what each measures.
const FUNCTIONS: [(&str, &str); 4] = [
    ("disabled", "disabled: no store enabled"),
    ("switched_off", "selected, but `switch::set(false)`"),
    (
        "enabled_unselected",
        "enabled, not selected: a store is enabled for another site",
    ),
    (
        "selected_1x16x384",
        "selected: copies a `[1, 16, 384]` f32 tensor into the store",
    ),
];

/// One function's estimate of the time per call, in ns.
pub struct Estimate {
    /// Median, with the 95% confidence interval of the median in place of the quartiles.
    median: Summary,
    /// The median absolute deviation of the samples.
    mad: f64,
}

pub struct Sites {
    estimates: Vec<Option<Estimate>>,
}

/// Reads criterion's `estimates.json` for each function; `None` when `site` was not run.
pub fn read(target: &Path) -> Option<Sites> {
    let dir = std::env::var_os("CRITERION_HOME").map_or_else(|| target.join("criterion"), PathBuf::from);
    let estimates: Vec<Option<Estimate>> = FUNCTIONS
        .iter()
        .map(|(name, _)| {
            let path = dir.join("site").join(name).join("new/estimates.json");
            let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
            let median = &json["median"];
            Some(Estimate {
                median: Summary {
                    median: median["point_estimate"].as_f64()?,
                    p25: median["confidence_interval"]["lower_bound"].as_f64()?,
                    p75: median["confidence_interval"]["upper_bound"].as_f64()?,
                    n: 2,
                },
                mad: json["median_abs_dev"]["point_estimate"].as_f64()?,
            })
        })
        .collect();
    estimates.iter().any(Option::is_some).then_some(Sites { estimates })
}

pub fn targets(sites: Option<&Sites>) -> Vec<Target> {
    let nan = Summary {
        median: f64::NAN,
        p25: f64::NAN,
        p75: f64::NAN,
        n: 0,
    };
    let disabled = sites.and_then(|s| s.estimates[0].as_ref()).map_or(nan, |e| e.median);
    vec![Target::at_most(
        "1. disabled capture site, ns per call",
        2.0,
        &disabled,
        2,
    )]
}

pub fn markdown(sites: Option<&Sites>) -> String {
    let mut s = String::from(
        "### 1b. Per capture site\n\n\
         `cargo bench -p hooks-bench --bench site` (criterion; `make bench` runs it first)\n\n",
    );
    let Some(sites) = sites else {
        s.push_str("Not measured in this run: the `site` bench left no estimates.\n");
        return s;
    };
    s.push_str("| site state | ns per call, median (95% CI) | median abs. deviation |\n|---|---|---|\n");
    for ((_, what), estimate) in FUNCTIONS.iter().zip(&sites.estimates) {
        match estimate {
            Some(e) => {
                let _ = writeln!(
                    s,
                    "| {what} | {:.2} ({:.2}–{:.2}) | {:.2} |",
                    e.median.median, e.median.p25, e.median.p75, e.mad
                );
            }
            None => {
                let _ = writeln!(s, "| {what} | not measured | |");
            }
        }
    }
    let _ = writeln!(
        s,
        "\nEach figure is `Site::capture(&tensor)` in a criterion loop (loop overhead included), \
         single-threaded. Disabled and switched off are the same code: one relaxed load of the \
         switch's `BUSY` flag (capture on, or an intervention enabled anywhere) and a branch \
         (`switch::busy`, inlined). Enabled but unselected adds an out-of-line call and acquire \
         loads of the site's own `edited` and `subscribed` flags: no lock. \
         Read from criterion's `target/criterion/site/*/new/estimates.json`."
    );
    s
}
