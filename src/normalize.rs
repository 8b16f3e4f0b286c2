//! `normalize:`: per-column clean-ups (trim, case, round) applied to the new snapshot before
//! keys are matched and rows hashed, so that a trailing space or a case change in a vendor file
//! is no change when the user says so. A baseline written without them gets them too (see
//! `run`), so adding a clean-up never turns rows CHANGED by itself.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::kernels::cast::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};

use crate::engine;
use crate::error::{Error, Result};
use crate::source::types::type_name;
use crate::spec::{Case, Normalize};

/// White space `trim` strips: what vendor exports leave around values, no-break spaces
/// (copied from web pages and Excel) included.
const TRIMMED: &[char] = &[' ', '\t', '\r', '\n', '\u{a0}'];

/// Apply `rules` to the columns they name; other columns pass through untouched.
pub fn apply(table: &str, batch: &RecordBatch, rules: &[Normalize]) -> Result<RecordBatch> {
    if rules.is_empty() {
        return Ok(batch.clone());
    }
    let mut columns = batch.columns().to_vec();
    for rule in rules {
        let Ok(i) = batch.schema_ref().index_of(&rule.column) else {
            continue;
        };
        columns[i] = column(table, rule, &columns[i])?;
    }
    RecordBatch::try_new(batch.schema(), columns)
        .map_err(|e| engine::error("normalising columns", e.into()))
}

fn column(table: &str, rule: &Normalize, values: &ArrayRef) -> Result<ArrayRef> {
    let wrong = |what: &str| Error::Usage {
        message: format!(
            "table {table}: `normalize` of \"{}\" asks for {what}, but the column is {}. Use trim and case on text columns and round on numbers.",
            rule.column,
            type_name(values.data_type())
        ),
    };
    let mut out = values.clone();
    if rule.trim || rule.case.is_some() {
        if !matches!(values.data_type(), DataType::Utf8) {
            return Err(wrong(if rule.trim { "trim" } else { "case" }));
        }
        let strings = out.as_string::<i32>();
        let mapped: StringArray = strings
            .iter()
            .map(|v| {
                v.map(|s| {
                    let s = if rule.trim {
                        s.trim_matches(TRIMMED)
                    } else {
                        s
                    };
                    match rule.case {
                        Some(Case::Lower) => s.to_lowercase(),
                        Some(Case::Upper) => s.to_uppercase(),
                        None => s.to_string(),
                    }
                })
            })
            .collect();
        out = Arc::new(mapped);
    }
    if let Some(places) = rule.round {
        out = match out.data_type() {
            DataType::Float64 => {
                let scale = 10f64.powi(places as i32);
                let rounded: Float64Array = out
                    .as_primitive::<Float64Type>()
                    .unary(|v| (v * scale).round() / scale);
                Arc::new(rounded)
            }
            DataType::Decimal128(p, s) if (places as i8) < *s => {
                // Arrow's cast to a smaller scale rounds half away from zero.
                let fewer = cast(&out, &DataType::Decimal128(*p, places as i8))
                    .map_err(|e| engine::error("rounding", e.into()))?;
                cast(&fewer, &DataType::Decimal128(*p, *s))
                    .map_err(|e| engine::error("rounding", e.into()))?
            }
            t if t.is_numeric() => out,
            _ => return Err(wrong("round")),
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema};

    fn rule(column: &str) -> Normalize {
        Normalize {
            column: column.into(),
            trim: false,
            case: None,
            round: None,
        }
    }

    #[test]
    fn trims_folds_case_and_rounds() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("price", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![
                    Some(" Greyson\u{a0}"),
                    None,
                    Some("a\tb "),
                ])),
                Arc::new(Float64Array::from(vec![Some(9.994), Some(2.5), None])),
            ],
        )
        .unwrap();
        let rules = [
            Normalize {
                trim: true,
                case: Some(Case::Upper),
                ..rule("name")
            },
            Normalize {
                round: Some(2),
                ..rule("price")
            },
        ];
        let out = apply("t", &batch, &rules).unwrap();
        let names: Vec<_> = out.column(0).as_string::<i32>().iter().collect();
        assert_eq!(names, [Some("GREYSON"), None, Some("A\tB")]);
        let prices: Vec<_> = out.column(1).as_primitive::<Float64Type>().iter().collect();
        assert_eq!(prices, [Some(9.99), Some(2.5), None]);
        let err = apply(
            "t",
            &batch,
            &[Normalize {
                trim: true,
                ..rule("price")
            }],
        )
        .unwrap_err();
        assert!(err.to_string().contains("is float64"), "{err}");
    }
}
