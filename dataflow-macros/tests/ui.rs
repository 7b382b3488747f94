//! Compile-fail tests: every attribute mistake is a spanned error (expected output in
//! `ui/*.stderr`), and a model using every attribute compiles.

#[test]
fn attribute_mistakes_are_spanned_compile_errors() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
    cases.pass("tests/ui-pass/*.rs");
}
