use super::quote;

#[test]
fn quote_leaves_plain_words_alone() {
    for word in [
        "cargo",
        "--seconds=20",
        "spiffe://mesh.example/ns/a",
        "-Cpasses=sancov-module",
    ] {
        assert_eq!(quote(word), word);
    }
}

#[test]
fn quote_wraps_words_a_shell_would_split() {
    assert_eq!(quote(""), "''");
    assert_eq!(quote("a b"), "'a b'");
    assert_eq!(quote("it's"), r"'it'\''s'");
    assert_eq!(quote("$HOME"), "'$HOME'");
}
