//! A deployment's key inside the scheduler: `NAME` in the default environment (so data,
//! container ids and DNS names from before environments stay as they are), `NAME.ENV` in any
//! other. The one place that maps between (environment, name) and the qualified name.

/// The environment that always exists; a request that names none means it.
pub(crate) const DEFAULT: &str = "default";

/// "" and "default" both mean the default environment.
pub(crate) fn normalize(env: &str) -> &str {
    if env.is_empty() { DEFAULT } else { env }
}

/// What a stored spec's `environment` holds: "" for the default environment (as every spec
/// from before environments has), the name otherwise.
pub(crate) fn stored(env: &str) -> String {
    match normalize(env) {
        DEFAULT => String::new(),
        env => env.to_string(),
    }
}

/// The name the scheduler stores and handles deployment `name` of `env` under.
pub(crate) fn qualified(env: &str, name: &str) -> String {
    match normalize(env) {
        DEFAULT => name.to_string(),
        env => format!("{name}.{env}"),
    }
}

/// (environment, name) of a qualified name. A deployment name has no '.', so the first one
/// separates them.
pub(crate) fn split(qualified: &str) -> (&str, &str) {
    match qualified.split_once('.') {
        Some((name, env)) => (env, name),
        None => (DEFAULT, qualified),
    }
}

/// A qualified name as callers know it: `hello`, or `hello in environment staging`.
pub(crate) fn describe(qualified: &str) -> String {
    match split(qualified) {
        (DEFAULT, name) => name.to_string(),
        (env, name) => format!("{name} in environment {env}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_and_split_are_inverse() {
        for (env, name, q) in [
            ("", "hello", "hello"),
            ("default", "hello", "hello"),
            ("staging", "hello", "hello.staging"),
            ("prod-eu", "web-1", "web-1.prod-eu"),
        ] {
            assert_eq!(qualified(env, name), q);
            assert_eq!(split(q), (normalize(env), name));
        }
        assert_eq!(stored("default"), "");
        assert_eq!(stored(""), "");
        assert_eq!(stored("staging"), "staging");
        assert_eq!(describe("hello"), "hello");
        assert_eq!(describe("hello.staging"), "hello in environment staging");
    }
}
