//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`) and field selectors
//! (`metadata.name`, `metadata.namespace` and any other dotted path, `=`/`==`/`!=`), parsed from
//! the query string and matched against objects.

use std::collections::BTreeSet;

use serde_json::Value;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

/// A parsed field selector: every `path=value` / `path!=value` must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<Requirement>);

/// A selector the stand-in cannot parse, with the offending text.
#[derive(Debug, thiserror::Error)]
#[error("invalid {what} selector {text:?}: {why}")]
pub struct SelectorError {
    what: &'static str,
    text: String,
    why: String,
}

/// Splits on commas outside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn parse_set(text: &str) -> Option<BTreeSet<String>> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

fn parse_term(term: &str) -> Result<Requirement, String> {
    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        return valid_key(key)
            .then(|| Requirement::NotExists(key.to_owned()))
            .ok_or_else(|| format!("bad key in {term:?}"));
    }
    let binary = |op: &str| term.split_once(op).map(|(k, v)| (k.trim(), v.trim()));
    let requirement = if let Some((k, v)) = binary("!=") {
        Requirement::NotEquals(k.into(), v.into())
    } else if let Some((k, v)) = binary("==").or_else(|| binary("=")) {
        Requirement::Equals(k.into(), v.into())
    } else if let Some((k, v)) = binary(" notin ") {
        let set = parse_set(v).ok_or_else(|| format!("`notin` needs (a,b) in {term:?}"))?;
        Requirement::NotIn(k.into(), set)
    } else if let Some((k, v)) = binary(" in ") {
        let set = parse_set(v).ok_or_else(|| format!("`in` needs (a,b) in {term:?}"))?;
        Requirement::In(k.into(), set)
    } else {
        Requirement::Exists(term.to_owned())
    };
    let key = match &requirement {
        Requirement::Equals(k, _)
        | Requirement::NotEquals(k, _)
        | Requirement::In(k, _)
        | Requirement::NotIn(k, _)
        | Requirement::Exists(k)
        | Requirement::NotExists(k) => k,
    };
    if valid_key(key) {
        Ok(requirement)
    } else {
        Err(format!("bad key {key:?}"))
    }
}

fn holds(requirement: &Requirement, lookup: impl Fn(&str) -> Option<String>) -> bool {
    match requirement {
        Requirement::Equals(k, v) => lookup(k).as_deref() == Some(v.as_str()),
        Requirement::NotEquals(k, v) => lookup(k).as_deref() != Some(v.as_str()),
        Requirement::In(k, set) => lookup(k).is_some_and(|v| set.contains(&v)),
        Requirement::NotIn(k, set) => lookup(k).is_none_or(|v| !set.contains(&v)),
        Requirement::Exists(k) => lookup(k).is_some(),
        Requirement::NotExists(k) => lookup(k).is_none(),
    }
}

impl LabelSelector {
    /// Parses `labelSelector`; empty selects everything.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        split_terms(text)
            .into_iter()
            .map(parse_term)
            .collect::<Result<_, _>>()
            .map(Self)
            .map_err(|why| SelectorError {
                what: "label",
                text: text.to_owned(),
                why,
            })
    }

    /// Whether `object`'s labels satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.0.iter().all(|r| {
            holds(r, |k| {
                labels.get(k).and_then(Value::as_str).map(str::to_owned)
            })
        })
    }
}

impl FieldSelector {
    /// Parses `fieldSelector`: only `=`, `==` and `!=` on dotted paths.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let err = |why: String| SelectorError {
            what: "field",
            text: text.to_owned(),
            why,
        };
        let mut out = Vec::new();
        for term in split_terms(text) {
            match parse_term(term).map_err(err)? {
                r @ (Requirement::Equals(..) | Requirement::NotEquals(..)) => out.push(r),
                _ => {
                    return Err(err(format!(
                        "{term:?}: field selectors take only =, == and !="
                    )));
                }
            }
        }
        Ok(Self(out))
    }

    /// Whether `object`'s fields satisfy every requirement (a missing field is "").
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|r| {
            holds(r, |path| {
                let mut at = object;
                for part in path.split('.') {
                    at = &at[part];
                }
                Some(match at {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}})
    }

    #[test]
    fn label_operators() {
        let o = obj(json!({"app": "web", "tier": "front"}));
        for (sel, want) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web, db)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!tier", false),
            ("missing", false),
            ("!missing", true),
            ("app=web,tier in (back)", false),
            ("missing notin (x)", true),
        ] {
            let parsed = LabelSelector::parse(sel).expect(sel);
            assert_eq!(parsed.matches(&o), want, "{sel}");
        }
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("a b=c").is_err());
    }

    #[test]
    fn field_selectors() {
        let o = obj(json!({}));
        let sel =
            FieldSelector::parse("metadata.name=a,metadata.namespace!=other").expect("parses");
        assert!(sel.matches(&o));
        assert!(
            !FieldSelector::parse("metadata.name=b")
                .expect("parses")
                .matches(&o)
        );
        assert!(FieldSelector::parse("metadata.name in (a)").is_err());
    }
}
