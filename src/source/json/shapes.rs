//! Which line gives a column a value of another shape than earlier lines did (an object, then a
//! number): arrow-json's inference and decoding fail on it with messages in Rust's notation
//! (`Expected object json type, found: Scalar({Int64})`) that name neither the line nor the
//! column. Run on the error path only.

use serde_json::{Map, Value};

/// A column whose values change shape, found at its first line of the new shape.
pub(super) struct Conflict {
    /// 1-based line in the file.
    pub(super) line: u64,
    /// The column (`size`, or `size.w` for a nested field).
    pub(super) column: String,
    /// What is wrong and what to do.
    pub(super) message: String,
}

/// The shapes arrow-json cannot put in one column. Text, numbers and true/false share one
/// (they are read as text when they mix).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Value,
    Object,
    ListOfValues,
    ListOfObjects,
    ListOfLists,
}

impl Shape {
    fn of(value: &Value) -> Option<Shape> {
        Some(match value {
            Value::Null => return None,
            Value::Bool(_) | Value::Number(_) | Value::String(_) => Shape::Value,
            Value::Object(_) => Shape::Object,
            Value::Array(items) => {
                let shapes: Vec<Shape> = items.iter().filter_map(Shape::of).collect();
                match shapes.first() {
                    None => return None,
                    Some(Shape::Value) if shapes.iter().all(|s| *s == Shape::Value) => {
                        Shape::ListOfValues
                    }
                    Some(Shape::Object) if shapes.iter().all(|s| *s == Shape::Object) => {
                        Shape::ListOfObjects
                    }
                    _ => Shape::ListOfLists,
                }
            }
        })
    }

    fn words(self) -> &'static str {
        match self {
            Shape::Value => "a single value",
            Shape::Object => "an object",
            Shape::ListOfValues => "a list of values",
            Shape::ListOfObjects => "a list of objects",
            Shape::ListOfLists => "a list of lists or of mixed items",
        }
    }
}

/// The first line where a column (at any depth of nesting) holds a value of another shape than
/// on an earlier line, or a list mixing shapes.
pub(super) fn first_conflict(bytes: &[u8]) -> Option<Conflict> {
    let mut seen: std::collections::HashMap<String, (Shape, u64)> = Default::default();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let number = i as u64 + 1;
        let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        if let Some(conflict) = check_object(&object, "", number, &mut seen) {
            return Some(conflict);
        }
    }
    None
}

fn check_object(
    object: &Map<String, Value>,
    prefix: &str,
    line: u64,
    seen: &mut std::collections::HashMap<String, (Shape, u64)>,
) -> Option<Conflict> {
    for (key, value) in object {
        let column = format!("{prefix}{key}");
        let Some(shape) = Shape::of(value) else {
            continue;
        };
        if shape == Shape::ListOfLists {
            return Some(Conflict {
                line,
                column,
                message: format!(
                    "the column holds {} here, which tidemark cannot read as one column. Write such values as JSON text (a string), or flatten them before the feed.",
                    shape.words()
                ),
            });
        }
        match seen.get(&column) {
            Some(&(earlier, first_line)) if earlier != shape => {
                return Some(Conflict {
                    line,
                    message: format!(
                        "the column holds {} here but {} on line {first_line}. Give the column one shape on every line, or write its values as JSON text (a string).",
                        shape.words(),
                        earlier.words()
                    ),
                    column,
                });
            }
            Some(_) => {}
            None => {
                seen.insert(column.clone(), (shape, line));
            }
        }
        let nested = match value {
            Value::Object(inner) => Some(inner),
            _ => None,
        };
        if let Some(inner) = nested
            && let Some(conflict) = check_object(inner, &format!("{column}."), line, seen)
        {
            return Some(conflict);
        }
    }
    None
}
