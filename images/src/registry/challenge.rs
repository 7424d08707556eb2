//! Parsing the `WWW-Authenticate` challenges registries answer 401 with (RFC 7235 syntax).

use std::collections::HashMap;

/// One authentication challenge, reduced to what a registry client acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Get a token from `realm` (an URL) for `service` and `scope`, then send it as a bearer token.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// Send the user name and password with every request.
    Basic { realm: Option<String> },
    /// A scheme berth does not speak (kept so that errors can name it).
    Other { scheme: String },
}

/// Parses one `WWW-Authenticate` header value, which may hold several challenges.
/// Malformed trailing text is ignored rather than failing the whole header: a usable challenge
/// before it is still worth trying.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut cursor = Cursor::new(header);
    let mut challenges = Vec::new();
    loop {
        cursor.skip_separators();
        if cursor.peek().is_none() {
            break;
        }
        let scheme = cursor.token();
        if scheme.is_empty() {
            // Not a token character: skip it so that a valid challenge after junk is found.
            cursor.pos += 1;
            continue;
        }
        let params = cursor.params();
        challenges.push(challenge_from(&scheme, params));
    }
    challenges
}

fn challenge_from(scheme: &str, mut params: HashMap<String, String>) -> Challenge {
    match scheme.to_ascii_lowercase().as_str() {
        "bearer" => match params.remove("realm") {
            Some(realm) => Challenge::Bearer {
                realm,
                service: params.remove("service"),
                scope: params.remove("scope"),
            },
            // A bearer challenge without a realm gives no way to get a token.
            None => Challenge::Other {
                scheme: "Bearer (without realm)".to_string(),
            },
        },
        "basic" => Challenge::Basic {
            realm: params.remove("realm"),
        },
        _ => Challenge::Other {
            scheme: scheme.to_string(),
        },
    }
}

/// A position in the header text.
struct Cursor {
    chars: Vec<char>,
    pos: usize,
}

impl Cursor {
    fn new(text: &str) -> Self {
        Self {
            chars: text.chars().collect(),
            pos: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn skip_separators(&mut self) {
        while self.peek().is_some_and(|c| c.is_whitespace() || c == ',') {
            self.pos += 1;
        }
    }

    /// An RFC 7230 token (scheme or parameter name); empty when none starts here.
    fn token(&mut self) -> String {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
        {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// `name=value` pairs up to the next challenge or the end. Names are lowercased.
    fn params(&mut self) -> HashMap<String, String> {
        let mut params = HashMap::new();
        loop {
            self.skip_separators();
            let start = self.pos;
            let name = self.token();
            self.skip_whitespace();
            if name.is_empty() || self.peek() != Some('=') {
                // Not a parameter: the next challenge's scheme (or junk). Leave it for the caller.
                self.pos = start;
                return params;
            }
            self.pos += 1;
            self.skip_whitespace();
            let value = if self.peek() == Some('"') {
                self.quoted_string()
            } else {
                self.token()
            };
            params.insert(name.to_ascii_lowercase(), value);
        }
    }

    /// A quoted string (the cursor is on its opening quote), with backslash escapes undone.
    fn quoted_string(&mut self) -> String {
        self.pos += 1;
        let mut value = String::new();
        while let Some(c) = self.peek() {
            self.pos += 1;
            match c {
                '"' => break,
                '\\' => {
                    if let Some(escaped) = self.peek() {
                        value.push(escaped);
                        self.pos += 1;
                    }
                }
                c => value.push(c),
            }
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_bearer_challenge() {
        let header = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#;
        assert_eq!(
            parse_challenges(header),
            vec![Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            }]
        );
    }

    #[test]
    fn commas_inside_quotes_and_escapes_survive() {
        let header =
            r#"bearer  realm = "http://h/t" , scope="repository:a/b:pull,push", service="s\"q""#;
        assert_eq!(
            parse_challenges(header),
            vec![Challenge::Bearer {
                realm: "http://h/t".into(),
                service: Some("s\"q".into()),
                scope: Some("repository:a/b:pull,push".into()),
            }]
        );
    }

    #[test]
    fn basic_challenge_and_several_in_one_header() {
        let header = r#"Basic realm="Registry Realm", Bearer realm="http://t/token",service=reg"#;
        assert_eq!(
            parse_challenges(header),
            vec![
                Challenge::Basic {
                    realm: Some("Registry Realm".into())
                },
                Challenge::Bearer {
                    realm: "http://t/token".into(),
                    service: Some("reg".into()),
                    scope: None,
                },
            ]
        );
    }

    #[test]
    fn unknown_schemes_and_realmless_bearer_are_not_usable() {
        assert_eq!(
            parse_challenges("Negotiate"),
            vec![Challenge::Other {
                scheme: "Negotiate".into()
            }]
        );
        assert!(matches!(
            parse_challenges(r#"Bearer service="x""#).as_slice(),
            [Challenge::Other { .. }]
        ));
        assert!(parse_challenges("").is_empty());
    }

    #[test]
    fn junk_does_not_loop_forever() {
        let parsed = parse_challenges(r#"Basic realm="r", @@@ ="x" Bearer realm="t""#);
        assert_eq!(
            parsed.first(),
            Some(&Challenge::Basic {
                realm: Some("r".into())
            })
        );
        assert!(parsed.contains(&Challenge::Bearer {
            realm: "t".into(),
            service: None,
            scope: None
        }));
    }
}
