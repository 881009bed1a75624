//! `output.path`: where a batch directory goes under the output root, as a template.
//!
//! # Fields
//!
//! A template is a relative path whose parts mix literal text with a closed set of fields, all pure
//! functions of the batch (so a retry, a takeover or `compact` computes the same path):
//!
//! | field | value |
//! |---|---|
//! | `{pipeline}` | `node.pipeline` |
//! | `{prefix}` | `batch.prefix` |
//! | `{batch_ms}` | the batch time, Unix milliseconds |
//! | `{date}` | the batch time's UTC date, `YYYY-MM-DD` |
//! | `{hour}` | its UTC hour, `00`–`23` |
//! | `{minute}` | its UTC minute, `00`–`59` |
//!
//! The default, `dt={date}/hour={hour}/{prefix}-{batch_ms}`, is Hive-style: Spark, Hive and Trino
//! discover `dt` and `hour` as partition columns, and no directory ever holds more than an hour of
//! batches (1,800 at the default 2 s interval), far below HDFS's 1,048,576 entries per directory
//! (`dfs.namenode.fs-limits.max-directory-items`), which a flat root reaches in about 24 days.
//!
//! # Rules
//!
//! - The last part names the batch directory and must hold `{batch_ms}`: batch names stay unique
//!   within their parent whatever the other parts are.
//! - No absolute path, no empty, `.` or `..` part, no part starting with `_` or `.` (reserved for
//!   `_temporary`, `_analysis.jsonl` and hidden files), literal text only of `[A-Za-z0-9._=-]`.
//! - `{source}` is refused: a batch holds the blocks of every source, and it is published with one
//!   rename, so it cannot sit under one source's directory. (The `files` layout already names each
//!   image `<source>-<seq>.<ext>`; Parquet has a `source` column.)

use std::fmt;

/// A parsed `output.path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    text: String,
    parts: Vec<Vec<Piece>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(Field),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Pipeline,
    Prefix,
    BatchMs,
    Date,
    Hour,
    Minute,
}

/// The fields a template may name, for error messages.
pub const FIELDS: &str = "{pipeline}, {prefix}, {batch_ms}, {date}, {hour}, {minute}";

/// Why a template was refused. The message names the template and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("output path template {template:?} {reason}")]
pub struct TemplateError {
    pub template: String,
    pub reason: String,
}

impl PathTemplate {
    /// The default, Hive-style layout.
    pub const DEFAULT: &'static str = "dt={date}/hour={hour}/{prefix}-{batch_ms}";
    /// Every batch directly under the output root (the layout before templates).
    pub const FLAT: &'static str = "{prefix}-{batch_ms}";

    /// Parses and checks `text`.
    pub fn parse(text: &str) -> Result<PathTemplate, TemplateError> {
        let err = |reason: String| TemplateError {
            template: text.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(err("is empty".into()));
        }
        if text.starts_with('/') {
            return Err(err(
                "is absolute: it is a path under the output root, e.g. dt={date}/{prefix}-{batch_ms}"
                    .into(),
            ));
        }
        let mut parts = Vec::new();
        for raw in text.split('/') {
            if raw.is_empty() {
                return Err(err("has an empty part (a doubled or trailing '/')".into()));
            }
            if raw == "." || raw == ".." {
                return Err(err(format!("has a {raw:?} part")));
            }
            if raw.starts_with('_') || raw.starts_with('.') {
                return Err(err(format!(
                    "has a part {raw:?} starting with '_' or '.' (reserved for _temporary, _analysis.jsonl and hidden files)"
                )));
            }
            parts.push(parse_part(raw).map_err(err)?);
        }
        let last = parts.last().expect("split yields one part at least");
        if !last.contains(&Piece::Field(Field::BatchMs)) {
            return Err(err(
                "has no {batch_ms} in its last part: the batch directory's own name must hold the batch time"
                    .into(),
            ));
        }
        Ok(PathTemplate {
            text: text.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the template names `{pipeline}`.
    pub fn has_pipeline(&self) -> bool {
        self.parts
            .iter()
            .flatten()
            .any(|p| *p == Piece::Field(Field::Pipeline))
    }

    /// How many directory levels a batch sits below the output root (1 for the flat layout).
    pub fn depth(&self) -> usize {
        self.parts.len()
    }

    /// The batch directory, relative to the output root, for a batch at `batch_ms`.
    pub fn render(&self, pipeline: &str, prefix: &str, batch_ms: u64) -> String {
        let civil = Civil::of_ms(batch_ms);
        let mut out = String::new();
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            for piece in part {
                match piece {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Field(Field::Pipeline) => out.push_str(pipeline),
                    Piece::Field(Field::Prefix) => out.push_str(prefix),
                    Piece::Field(Field::BatchMs) => out.push_str(&batch_ms.to_string()),
                    Piece::Field(Field::Date) => out.push_str(&format!(
                        "{:04}-{:02}-{:02}",
                        civil.year, civil.month, civil.day
                    )),
                    Piece::Field(Field::Hour) => out.push_str(&format!("{:02}", civil.hour)),
                    Piece::Field(Field::Minute) => out.push_str(&format!("{:02}", civil.minute)),
                }
            }
        }
        out
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn parse_part(raw: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('{') {
            let Some(end) = after.find('}') else {
                return Err(format!("has an unclosed '{{' in {raw:?}"));
            };
            let name = &after[..end];
            let field = match name {
                "pipeline" => Field::Pipeline,
                "prefix" => Field::Prefix,
                "batch_ms" => Field::BatchMs,
                "date" => Field::Date,
                "hour" => Field::Hour,
                "minute" => Field::Minute,
                "source" => {
                    return Err("names {source}: a batch holds every source's blocks and is published with one rename, so it cannot be under one source's directory".into())
                }
                other => return Err(format!("names an unknown field {{{other}}} (known: {FIELDS})")),
            };
            pieces.push(Piece::Field(field));
            rest = &after[end + 1..];
        } else {
            let end = rest.find('{').unwrap_or(rest.len());
            let text = &rest[..end];
            if let Some(c) = text
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '=' | '-')))
            {
                return Err(format!(
                    "has {c:?} in {raw:?}: literal text is [A-Za-z0-9._=-]"
                ));
            }
            pieces.push(Piece::Text(text.to_owned()));
            rest = &rest[end..];
        }
    }
    Ok(pieces)
}

/// A UTC civil time, from Unix milliseconds.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
}

impl Civil {
    fn of_ms(ms: u64) -> Civil {
        let secs = ms / 1000;
        let days = (secs / 86_400) as i64;
        let of_day = secs % 86_400;
        // Howard Hinnant's days_from_civil, inverted (proleptic Gregorian).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: (of_day / 3600) as u32,
            minute: (of_day % 3600 / 60) as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_template_renders_hive_style_utc_partitions() {
        let t = PathTemplate::parse(PathTemplate::DEFAULT).unwrap();
        // 2026-12-02T18:36:51.123Z
        assert_eq!(
            t.render("p", "images", 1_796_236_611_123),
            "dt=2026-12-02/hour=18/images-1796236611123"
        );
        assert_eq!(t.depth(), 3);
        assert!(!t.has_pipeline());
    }

    #[test]
    fn dates_are_utc_across_month_year_and_leap_day_boundaries() {
        let t = PathTemplate::parse("{date}/{hour}/{minute}/{batch_ms}").unwrap();
        assert_eq!(t.render("p", "x", 0), "1970-01-01/00/00/0");
        // 2024-02-29T23:59:59.999Z and the next millisecond.
        assert_eq!(
            t.render("p", "x", 1_709_251_199_999),
            "2024-02-29/23/59/1709251199999"
        );
        assert_eq!(
            t.render("p", "x", 1_709_251_200_000),
            "2024-03-01/00/00/1709251200000"
        );
        // 2099-12-31T12:30:00Z
        assert_eq!(
            t.render("p", "x", 4_102_403_400_000),
            "2099-12-31/12/30/4102403400000"
        );
    }

    #[test]
    fn pipeline_and_prefix_fields_take_their_values() {
        let t = PathTemplate::parse("{pipeline}/dt={date}/{prefix}-{batch_ms}").unwrap();
        assert!(t.has_pipeline());
        assert_eq!(t.render("east", "cams", 0), "east/dt=1970-01-01/cams-0");
    }

    #[test]
    fn a_bad_template_is_refused_with_the_template_and_the_reason() {
        for (bad, says) in [
            ("", "is empty"),
            ("/abs/{batch_ms}", "is absolute"),
            ("dt={date}/../{batch_ms}", "\"..\" part"),
            ("./{batch_ms}", "\".\" part"),
            ("a//{batch_ms}", "empty part"),
            ("a/{batch_ms}/", "empty part"),
            ("dt={date}/{prefix}", "no {batch_ms} in its last part"),
            ("{batch_ms}/{prefix}", "no {batch_ms} in its last part"),
            ("{day}/{batch_ms}", "unknown field {day}"),
            ("{source}/{batch_ms}", "{source}"),
            ("{date/{batch_ms}", "unclosed"),
            ("_x/{batch_ms}", "starting with '_' or '.'"),
            (".x/{batch_ms}", "starting with '_' or '.'"),
            ("a b/{batch_ms}", "' '"),
            ("a\\b/{batch_ms}", "'\\\\'"),
        ] {
            let e = PathTemplate::parse(bad).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains(says), "{bad:?}: {msg} should say {says}");
        }
    }
}
