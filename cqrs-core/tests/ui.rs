//! Compile-fail tests of the derives: each misuse gives our spanned error with a `help:` line.

#[test]
fn replica_derive_misuse() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/replica/*.rs");
}

#[test]
fn master_derive_misuse() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/master/*.rs");
}

#[test]
fn captured_writes_misuse() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/capture/*.rs");
}
