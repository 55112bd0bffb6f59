//! Name templates: how a topic's words fill an Axon name, and an Axon name
//! fills a topic.
//!
//! `{N}` is word `N` of the bus topic (0-based), `{type}` the payload type,
//! `{command}`, `{query}`, `{processor}` what the mapping names; filters
//! follow a bar and apply left to right:
//!
//! | filter | `com.example.AccountOpened` / `open-account` |
//! |---|---|
//! | `simple` | `AccountOpened` (after the last `.` or `$`) |
//! | `kebab` | `account-opened` (from `AccountOpened`) |
//! | `pascal` | `OpenAccount` (from `open-account`) |
//! | `lower` | lower case |
//!
//! So `command = "com.example.bank.{2|pascal}"` turns `bank.command.open-account`
//! into `com.example.bank.OpenAccount`, and `topic = "bank.tracked.{type|simple|kebab}"`
//! turns an `AccountOpened` event into `bank.tracked.account-opened`.
//! `{{` and `}}` are literal braces.

use std::borrow::Cow;
use std::fmt;

use telamon_sdk::Topic;

/// A parsed template.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Template {
    source: String,
    parts: Vec<Part>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?})", self.source)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var { var: Var, filters: Vec<Filter> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    Word(usize),
    Named(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    Simple,
    Kebab,
    Pascal,
    Lower,
}

/// What a template can draw on.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Vars<'a> {
    /// The bus topic whose words `{N}` names.
    pub(crate) topic: Option<&'a Topic>,
    /// Named values (`type`, `command` …).
    pub(crate) named: &'a [(&'a str, &'a str)],
}

/// Why a template could not be parsed or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TemplateError {
    /// A `{` without its `}`, or a stray `}`.
    #[error("unbalanced braces in `{0}` (write `{{{{` or `}}}}` for a literal brace)")]
    Unbalanced(String),
    /// An unknown filter.
    #[error("unknown filter `{0}` (known: simple, kebab, pascal, lower)")]
    Filter(String),
    /// An empty or malformed placeholder.
    #[error("malformed placeholder `{{{0}}}`")]
    Placeholder(String),
    /// The topic has no such word, or the name is not available here.
    #[error("`{{{0}}}` has no value here")]
    Missing(String),
}

impl Template {
    /// Parses `text`.
    pub(crate) fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(TemplateError::Unbalanced(text.to_owned())),
                '{' => {
                    let mut inner = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => {
                                return Err(TemplateError::Unbalanced(text.to_owned()));
                            }
                            Some(ch) => inner.push(ch),
                        }
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(placeholder(&inner)?);
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template {
            source: text.to_owned(),
            parts,
        })
    }

    /// Checks that every placeholder can be filled where the template is
    /// used: named values from `named`, topic words only if `words`.
    pub(crate) fn check(&self, named: &[&str], words: bool) -> Result<(), TemplateError> {
        for part in &self.parts {
            match part {
                Part::Var {
                    var: Var::Word(n), ..
                } if !words => {
                    return Err(TemplateError::Missing(n.to_string()));
                }
                Part::Var {
                    var: Var::Named(n), ..
                } if !named.contains(&n.as_str()) => {
                    return Err(TemplateError::Missing(n.clone()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Renders with `vars`.
    pub(crate) fn render(&self, vars: Vars<'_>) -> Result<String, TemplateError> {
        if let [Part::Text(t)] = self.parts.as_slice() {
            return Ok(t.clone());
        }
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var { var, filters } => {
                    let value: Cow<'_, str> = match var {
                        Var::Word(n) => vars
                            .topic
                            .and_then(|t| t.words().nth(*n))
                            .map(Cow::Borrowed),
                        Var::Named(name) => vars
                            .named
                            .iter()
                            .find(|(k, _)| k == name)
                            .map(|(_, v)| Cow::Borrowed(*v)),
                    }
                    .ok_or_else(|| TemplateError::Missing(placeholder_text(var)))?;
                    let value = filters.iter().fold(value.into_owned(), |v, f| f.apply(&v));
                    out.push_str(&value);
                }
            }
        }
        Ok(out)
    }
}

fn placeholder_text(var: &Var) -> String {
    match var {
        Var::Word(n) => n.to_string(),
        Var::Named(n) => n.clone(),
    }
}

fn placeholder(inner: &str) -> Result<Part, TemplateError> {
    let mut pieces = inner.split('|').map(str::trim);
    let head = pieces.next().unwrap_or_default();
    let var = if let Ok(n) = head.parse::<usize>() {
        Var::Word(n)
    } else if !head.is_empty()
        && head
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '-' || c == '_')
    {
        Var::Named(head.to_owned())
    } else {
        return Err(TemplateError::Placeholder(inner.to_owned()));
    };
    let filters = pieces
        .map(|f| match f {
            "simple" => Ok(Filter::Simple),
            "kebab" => Ok(Filter::Kebab),
            "pascal" => Ok(Filter::Pascal),
            "lower" => Ok(Filter::Lower),
            other => Err(TemplateError::Filter(other.to_owned())),
        })
        .collect::<Result<_, _>>()?;
    Ok(Part::Var { var, filters })
}

impl Filter {
    fn apply(self, v: &str) -> String {
        match self {
            Filter::Simple => simple_name(v).to_owned(),
            Filter::Kebab => kebab(v),
            Filter::Pascal => pascal(v),
            Filter::Lower => v.to_lowercase(),
        }
    }
}

/// The part of a type name after its last `.` or `$` (a Java nested class).
pub(crate) fn simple_name(type_name: &str) -> &str {
    type_name
        .rsplit(['.', '$'])
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(type_name)
}

/// `AccountOpened` → `account-opened`; `HTTPServer` → `http-server`.
fn kebab(v: &str) -> String {
    let chars: Vec<char> = v.chars().collect();
    let mut out = String::with_capacity(v.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let prev_upper = i > 0 && chars[i - 1].is_uppercase();
            if i > 0 && (prev_lower || (prev_upper && next_lower)) && !out.ends_with('-') {
                out.push('-');
            }
            out.extend(c.to_lowercase());
        } else if c == '_' || c == ' ' {
            out.push('-');
        } else {
            out.push(c);
        }
    }
    out
}

/// `open-account` → `OpenAccount` (also `_` and spaces as separators).
fn pascal(v: &str) -> String {
    v.split(['-', '_', ' '])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut cs = w.chars();
            match cs.next() {
                Some(first) => first.to_uppercase().chain(cs).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(
        t: &str,
        topic: Option<&str>,
        named: &[(&str, &str)],
    ) -> Result<String, TemplateError> {
        let topic = topic.map(|t| Topic::new(t).unwrap());
        Template::parse(t)?.render(Vars {
            topic: topic.as_ref(),
            named,
        })
    }

    #[test]
    fn words_names_and_filters() {
        assert_eq!(
            render(
                "com.example.bank.{2|pascal}",
                Some("bank.command.open-account"),
                &[]
            )
            .unwrap(),
            "com.example.bank.OpenAccount"
        );
        assert_eq!(
            render(
                "bank.tracked.{type|simple|kebab}",
                None,
                &[("type", "com.example.Outer$AccountOpened")]
            )
            .unwrap(),
            "bank.tracked.account-opened"
        );
        assert_eq!(render("{type}", None, &[("type", "x.Y")]).unwrap(), "x.Y");
        assert_eq!(render("a{{b}}", None, &[]).unwrap(), "a{b}");
        assert_eq!(kebab("HTTPServerError"), "http-server-error");
        assert_eq!(kebab("Deposit2Made"), "deposit2-made");
    }

    #[test]
    fn bad_templates_and_missing_values_are_errors() {
        for bad in ["{", "a}", "{}", "{Type}", "{2|shout}", "{a{b}}"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            render("{5}", Some("a.b"), &[]),
            Err(TemplateError::Missing("5".into()))
        );
        assert_eq!(
            render("{type}", None, &[]),
            Err(TemplateError::Missing("type".into()))
        );
        let t = Template::parse("a.{0}.{type}").unwrap();
        assert!(t.check(&["type"], true).is_ok());
        assert_eq!(
            t.check(&["type"], false),
            Err(TemplateError::Missing("0".into()))
        );
        assert_eq!(
            t.check(&[], true),
            Err(TemplateError::Missing("type".into()))
        );
    }
}
