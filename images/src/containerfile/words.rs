//! Variable expansion (`$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR:+alt}`) and the quoting
//! rules of ENV, LABEL and ARG words, as the Dockerfile reference describes them.

/// Looks a variable up; `None` when it is not set.
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Splits `input` into words on unquoted whitespace, removing quotes and backslash escapes
/// and expanding variables outside single quotes.
pub(crate) fn split(input: &str, vars: Lookup<'_>) -> Result<Vec<String>, String> {
    scan(input, vars, true)
}

/// `input` as one word: variables expanded and quotes removed, whitespace kept.
pub(crate) fn expand(input: &str, vars: Lookup<'_>) -> Result<String, String> {
    Ok(scan(input, vars, false)?.concat())
}

/// The quoting and expansion rules; whitespace ends a word only when `split_words`.
fn scan(input: &str, vars: Lookup<'_>, split_words: bool) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if split_words && c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated ' in {input:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unterminated \" in {input:?}")),
                        },
                        Some('$') => word.push_str(&variable(&mut chars, vars)?),
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated \" in {input:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            '$' => {
                in_word = true;
                word.push_str(&variable(&mut chars, vars)?);
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Reads a variable reference after its `$` and returns its value.
fn variable(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    vars: Lookup<'_>,
) -> Result<String, String> {
    if chars.peek() == Some(&'{') {
        chars.next();
        let mut body = String::new();
        loop {
            match chars.next() {
                Some('}') => break,
                Some(c) => body.push(c),
                None => return Err(format!("unterminated ${{{body}")),
            }
        }
        return braced(&body, vars);
    }
    let mut name = String::new();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_alphanumeric() || c == '_' {
            name.push(c);
            chars.next();
        } else {
            break;
        }
    }
    if name.is_empty() {
        return Ok("$".into());
    }
    Ok(vars(&name).unwrap_or_default())
}

/// The value of `${body}`: `NAME`, `NAME:-default` or `NAME:+alternative`.
fn braced(body: &str, vars: Lookup<'_>) -> Result<String, String> {
    let (name, op) = match body.find(':') {
        Some(at) => (&body[..at], Some(&body[at..])),
        None => (body, None),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("bad variable name in ${{{body}}}"));
    }
    let value = vars(name).filter(|v| !v.is_empty());
    match op {
        None => Ok(vars(name).unwrap_or_default()),
        Some(op) if op.starts_with(":-") => Ok(value.unwrap_or_else(|| op[2..].to_string())),
        Some(op) if op.starts_with(":+") => {
            Ok(value.map(|_| op[2..].to_string()).unwrap_or_default())
        }
        Some(op) => Err(format!("unsupported modifier {op:?} in ${{{body}}}")),
    }
}

/// `KEY=VALUE` words (ENV, LABEL); ENV's legacy `KEY VALUE...` form when `legacy` allows it.
pub(crate) fn pairs(
    input: &str,
    vars: Lookup<'_>,
    legacy: bool,
) -> Result<Vec<(String, String)>, String> {
    let words = split(input, vars)?;
    if legacy && words.first().is_some_and(|w| !w.contains('=')) {
        let (key, rest) = input
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("{input:?} needs a value: KEY=VALUE or KEY VALUE"))?;
        return Ok(vec![(key.to_string(), expand(rest.trim(), vars)?)]);
    }
    words
        .into_iter()
        .map(|word| match word.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
            _ => Err(format!("{word:?} is not KEY=VALUE")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "A" => Some("1".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion_forms() {
        let v: Lookup<'_> = &vars;
        assert_eq!(expand("x$A ${A}y", v).unwrap(), "x1 1y");
        assert_eq!(
            expand("${B:-def} ${EMPTY:-e} ${A:+set}", v).unwrap(),
            "def e set"
        );
        assert_eq!(expand("'$A' \"$A\" \\$A", v).unwrap(), "$A 1 $A");
        assert!(expand("${A", v).is_err());
    }

    #[test]
    fn pairs_quoted_and_legacy() {
        let v: Lookup<'_> = &vars;
        assert_eq!(
            pairs("K=\"a b\" L=$A", v, true).unwrap(),
            [("K".into(), "a b".into()), ("L".into(), "1".to_string())]
        );
        assert_eq!(
            pairs("K hello  world", v, true).unwrap(),
            [("K".to_string(), "hello  world".to_string())]
        );
        assert!(pairs("nokey", v, false).is_err());
    }
}
