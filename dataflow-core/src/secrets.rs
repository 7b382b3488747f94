//! Passwords in connection URLs: kept out of messages, logs and traces.
//!
//! The lowest layer of the crate: it imports nothing from it, and configuration, errors and
//! every store backend use it.
//!
//! Finding the password is our own code, not the `url` crate's parser, on purpose: users
//! paste URLs whose passwords hold `/`, `@` or `#` without percent-encoding them, and a
//! strict parser then either rejects the URL (so the message quoting it could not be
//! scrubbed) or reads part of the password as the host or the fragment (and leaks the rest).
//! Here the password is everything between the first `:` after `scheme://` and the *last*
//! `@`, which hides too much rather than too little. Percent-decoding is the
//! `percent-encoding` crate's.

use std::ops::Range;

use percent_encoding::percent_decode_str;

/// Where the password of a connection URL is, as a byte range: between the first `:` after
/// `scheme://` and the last `@`. The last `@`, not the first `/`, ends it, so that a password
/// holding `/`, `@` or `#` (which should be percent-encoded, but often is not) is still found;
/// an `@` later in the URL only makes more of it hidden.
fn password_span(url: &str) -> Option<Range<usize>> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let at = rest.rfind('@')?;
    let colon = rest[..at].find(':')?;
    Some(start + colon + 1..start + at)
}

/// A connection URL with its password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match password_span(url) {
        Some(span) => format!("{}***{}", &url[..span.start], &url[span.end..]),
        None => url.to_owned(),
    }
}

/// `url` without its password (and the `:` before it), and the password, percent-decoded:
/// for drivers that take the password apart from a URL they record in their traces.
pub(crate) fn split_password(url: &str) -> (String, Option<String>) {
    match password_span(url) {
        Some(span) => {
            let password = &url[span.clone()];
            let decoded = percent_decoded(password).unwrap_or_else(|| password.to_owned());
            (format!("{}{}", &url[..span.start - 1], &url[span.end..]), Some(decoded))
        }
        None => (url.to_owned(), None),
    }
}

/// `text` with every appearance of `url`'s password, as written and percent-decoded,
/// replaced by `***`: for messages of drivers that quote the connection string they were given.
pub fn scrub_password(text: &str, url: &str) -> String {
    let Some(span) = password_span(url) else { return text.to_owned() };
    let password = &url[span];
    if password.is_empty() {
        return text.to_owned();
    }
    let mut out = text.replace(password, "***");
    if let Some(decoded) = percent_decoded(password).filter(|d| !d.is_empty() && d != password) {
        out = out.replace(&decoded, "***");
    }
    out
}

/// `text` with `%XX` escapes decoded, when that gives UTF-8.
fn percent_decoded(text: &str) -> Option<String> {
    percent_decode_str(text).decode_utf8().ok().map(|d| d.into_owned())
}

#[cfg(test)]
mod tests {
    use super::{redact_url, scrub_password, split_password};

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(redact_url("postgres://app:s3cret@db:5432/x"), "postgres://app:***@db:5432/x");
        assert_eq!(redact_url("redis://:pw@127.0.0.1:6379/"), "redis://:***@127.0.0.1:6379/");
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
        // Characters that should have been percent-encoded, but were not.
        assert_eq!(redact_url("postgres://app:s3c/r@t#1@db/x"), "postgres://app:***@db/x");
        assert_eq!(redact_url("sqlite:///data/x@y.db"), "sqlite:///data/x@y.db");
    }

    #[test]
    fn the_password_is_split_from_the_url() {
        assert_eq!(
            split_password("postgres://app:p%40ss/w@db:5432/x"),
            ("postgres://app@db:5432/x".to_owned(), Some("p@ss/w".to_owned()))
        );
        assert_eq!(split_password("postgres://app@db/x"), ("postgres://app@db/x".to_owned(), None));
    }

    #[test]
    fn passwords_are_scrubbed_from_messages_that_quote_the_url() {
        let url = "postgres://app:s3c/r%40t@db/x";
        let message = format!("The connection string '{url}' cannot be parsed (password s3c/r@t)");
        let scrubbed = scrub_password(&message, url);
        assert_eq!(
            scrubbed,
            "The connection string 'postgres://app:***@db/x' cannot be parsed (password ***)"
        );
        assert_eq!(scrub_password("no secret here", "postgres://app@db/x"), "no secret here");
    }
}
