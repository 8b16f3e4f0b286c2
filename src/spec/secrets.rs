//! Secrets in a pipeline file: `${VAR}` is read from the environment when a destination is
//! used, never earlier and never written anywhere. A value read so is a [`Secret`]: what it
//! connects with, and the texts every message about it must not contain ([`Secret::redact`]).

use crate::error::{Error, Result};

/// A setting with its `${VAR}`s filled in from the environment.
#[derive(Clone)]
pub struct Secret {
    value: String,
    /// The values of the variables it holds, longest first, to take out of messages.
    hidden: Vec<String>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// The filled-in setting, to connect with; never for a message.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// `message` with every value of this secret's variables replaced by `${…}`.
    pub fn redact(&self, message: &str) -> String {
        let mut out = message.to_string();
        for hidden in &self.hidden {
            out = out.replace(hidden.as_str(), "${…}");
        }
        out
    }
}

/// The names of the variables `template` uses, in order. A `$` before a template's `{{ … }}`
/// (`"${{ row.price }}"`) is a dollar sign, not a variable.
pub fn variables(template: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        if after.starts_with('{') {
            rest = after;
            continue;
        }
        match after.find('}') {
            Some(end) => {
                names.push(after[..end].to_string());
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    names
}

/// What is wrong with the `${VAR}`s of `template`, if anything.
pub fn problem(template: &str) -> Option<String> {
    let opened = template.matches("${").count() - template.matches("${{").count();
    let names = variables(template);
    if names.len() != opened {
        return Some("a `${` has no closing `}`: write `${VARIABLE}`.".to_string());
    }
    let bad = names.iter().find(|n| {
        n.is_empty()
            || n.starts_with(|c: char| c.is_ascii_digit())
            || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })?;
    Some(format!(
        "`${{{bad}}}` is not a variable name: use letters, digits and `_`, as in `${{SHOP_DATABASE_URL}}`."
    ))
}

/// `template` with its `${VAR}`s read from the environment; a variable that is not set is an
/// error naming it (`what`: the setting, for the message).
pub fn expand(template: &str, what: &str) -> Result<Secret> {
    let mut value = template.to_string();
    let mut hidden = Vec::new();
    for name in variables(template) {
        let set = std::env::var(&name).map_err(|_| Error::Usage {
            message: format!(
                "{what} reads the environment variable {name}, which is not set; set it where tidemark runs (its value is never printed or stored)."
            ),
        })?;
        value = value.replace(&format!("${{{name}}}"), &set);
        if !set.is_empty() {
            hidden.push(set);
        }
    }
    // A URL's password, written in the file itself, is hidden too.
    if let Ok(url) = url::Url::parse(&value)
        && let Some(password) = url.password()
    {
        hidden.push(password.to_string());
    }
    hidden.sort_by_key(|h| std::cmp::Reverse(h.len()));
    Ok(Secret { value, hidden })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_named_checked_and_filled_in() {
        assert_eq!(variables("a${X}b${Y_2}"), ["X", "Y_2"]);
        assert!(problem("postgres://${X}").is_none());
        assert!(problem("postgres://${X").unwrap().contains("no closing"));
        assert!(problem("${1X}").unwrap().contains("not a variable name"));
        assert_eq!(
            variables(r#"{"price": "${{ row.price }}", "t": "${T}"}"#),
            ["T"]
        );
        assert!(problem("${{ row.price }}").is_none());
        // SAFETY: tests that set this variable run only here.
        unsafe { std::env::set_var("TIDEMARK_TEST_SECRET_A", "pa55") };
        let secret = expand("postgres://u:${TIDEMARK_TEST_SECRET_A}@h/db", "url").unwrap();
        assert_eq!(secret.expose(), "postgres://u:pa55@h/db");
        assert_eq!(secret.redact("failed for u:pa55@h"), "failed for u:${…}@h");
        assert!(!format!("{secret:?}").contains("pa55"));
        let missing = expand(
            "${TIDEMARK_TEST_SECRET_UNSET}",
            "table t: deliver shopdb: url",
        );
        let message = missing.unwrap_err().to_string();
        assert!(
            message.contains("TIDEMARK_TEST_SECRET_UNSET, which is not set"),
            "{message}"
        );
    }
}
