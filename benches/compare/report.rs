//! The result table (stdout) and its JSON twin: one row per metric with keyward's value, the
//! reference's (ssh-agent, `ssh-keygen`, `openssl req` or `openssl speed`), their ratio, the
//! target (a ratio, or an absolute limit on keyward's own value) and whether it is met.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

/// A measured value, or why there is none (an agent failed to start, answered wrongly, ...).
pub type Val = Result<f64, String>;

/// The reason given for a reference that does not exist (shown as `n/a`, not as an error).
pub const NOT_APPLICABLE: &str = "n/a";

/// Which direction of the keyward/reference ratio is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Throughput: a ratio above 1 means keyward is faster.
    Higher,
    /// Latency and memory: a ratio below 1 means keyward is better.
    Lower,
}

/// One line of the report.
pub struct Row {
    pub metric: String,
    pub unit: &'static str,
    pub keyward: Val,
    pub reference: Val,
    /// Name of what `reference` measured.
    pub reference_name: &'static str,
    pub better: Better,
    /// The ratio keyward/reference must reach (`Higher`: at least; `Lower`: at most).
    pub target: Option<f64>,
    /// A limit on keyward's own value, in `unit` (`Higher`: at least; `Lower`: at most).
    pub limit: Option<f64>,
}

impl Row {
    /// A row compared with ssh-agent.
    pub fn new(
        metric: impl Into<String>,
        unit: &'static str,
        better: Better,
        vals: [Val; 2],
    ) -> Self {
        let [keyward, reference] = vals;
        Self {
            metric: metric.into(),
            unit,
            keyward,
            reference,
            reference_name: "ssh-agent",
            better,
            target: None,
            limit: None,
        }
    }

    /// Sets an absolute limit on keyward's value.
    pub fn limit(mut self, value: f64) -> Self {
        self.limit = Some(value);
        self
    }

    /// Names the reference.
    pub fn reference(mut self, name: &'static str) -> Self {
        self.reference_name = name;
        self
    }

    /// Sets the target ratio.
    pub fn target(mut self, ratio: f64) -> Self {
        self.target = Some(ratio);
        self
    }

    fn ratio(&self) -> Option<f64> {
        match (&self.keyward, &self.reference) {
            (Ok(k), Ok(r)) if *r > 0.0 => Some(k / r),
            _ => None,
        }
    }

    /// `Some(true)` met, `Some(false)` missed (or unmeasurable), `None` no target.
    pub fn pass(&self) -> Option<bool> {
        let meets = |value: Option<f64>, bound: f64| {
            value.is_some_and(|v| match self.better {
                Better::Higher => v >= bound,
                Better::Lower => v <= bound,
            })
        };
        match (self.target, self.limit) {
            (None, None) => None,
            (target, limit) => Some(
                target.is_none_or(|t| meets(self.ratio(), t))
                    && limit.is_none_or(|l| meets(self.keyward.as_ref().ok().copied(), l)),
            ),
        }
    }

    fn target_text(&self) -> String {
        let op = match self.better {
            Better::Higher => ">=",
            Better::Lower => "<=",
        };
        let mut parts = Vec::new();
        if let Some(t) = self.target {
            parts.push(format!("{op} {t:.2}x"));
        }
        if let Some(l) = self.limit {
            parts.push(format!("{op} {l} {}", self.unit));
        }
        parts.join(", ")
    }
}

fn ratio_text(x: f64) -> String {
    if x < 0.1 {
        format!("{x:.4}x")
    } else {
        format!("{x:.2}x")
    }
}

fn cell(v: &Val) -> String {
    match v {
        Ok(x) if *x >= 100.0 => format!("{x:.0}"),
        Ok(x) => format!("{x:.1}"),
        Err(e) if e == NOT_APPLICABLE => NOT_APPLICABLE.to_owned(),
        Err(_) => "error".to_owned(),
    }
}

/// Renders the table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let head = [
        "metric",
        "keyward",
        "reference",
        "ratio k/ref",
        "better",
        "target",
        "result",
    ];
    let body: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                format!("{} ({})", r.metric, r.unit),
                cell(&r.keyward),
                format!("{} {}", cell(&r.reference), r.reference_name),
                r.ratio().map_or_else(|| "-".to_owned(), ratio_text),
                match r.better {
                    Better::Higher => "higher".to_owned(),
                    Better::Lower => "lower".to_owned(),
                },
                r.target_text(),
                match r.pass() {
                    None => String::new(),
                    Some(true) => "PASS".to_owned(),
                    Some(false) => "FAIL".to_owned(),
                },
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..head.len())
        .map(|c| {
            body.iter()
                .map(|r| r[c].len())
                .chain([head[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let head = head.map(str::to_owned);
    let rule = widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>();
    for cells in [&head[..], &rule[..]]
        .into_iter()
        .chain(body.iter().map(|r| &r[..]))
    {
        for (text, w) in cells.iter().zip(&widths) {
            let _ = write!(out, "{text:<w$}  ");
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    for r in rows {
        for (who, v) in [("keyward", &r.keyward), (r.reference_name, &r.reference)] {
            if let Err(e) = v.as_ref().map_err(String::as_str)
                && e != NOT_APPLICABLE
            {
                let _ = writeln!(out, "  {}: {who}: {e}", r.metric);
            }
        }
    }
    out
}

fn val_json(v: &Val) -> Value {
    match v {
        Ok(x) => json!(x),
        Err(e) => json!({ "error": e }),
    }
}

/// Writes the rows and run parameters as JSON to `path`.
pub fn write_json(path: &Path, rows: &[Row], params: &Value) -> Result<()> {
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "metric": r.metric,
                "unit": r.unit,
                "keyward": val_json(&r.keyward),
                "reference": val_json(&r.reference),
                "reference_name": r.reference_name,
                "ratio": r.ratio(),
                "better": match r.better { Better::Higher => "higher", Better::Lower => "lower" },
                "target_ratio": r.target,
                "limit": r.limit,
                "pass": r.pass(),
            })
        })
        .collect();
    let doc = json!({ "params": params, "rows": rows });
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}
