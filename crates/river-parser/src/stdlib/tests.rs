//! Unit tests of the functions added for Alloy's current reference (`encoding.url_encode`,
//! `encoding.url_decode`, `encoding.to_json`, `array.group_by`, `array.combine_maps`' fourth
//! argument) and of the deprecation bookkeeping. Errors are checked with their position, as
//! `rill run` prints them.

use super::{deprecated_replacement, first_use, DEPRECATED};
use crate::eval::{eval_body, Scope};
use crate::value::Value;

/// Evaluates `x = EXPR` and returns the value.
fn eval(expr: &str) -> Value {
    let src = format!("x = {expr}\n");
    let file = crate::parse_file(&src).expect("parses");
    let body = eval_body(&file.body, &Scope::new()).expect("evaluates");
    body.attr("x").cloned().expect("x is set")
}

/// Evaluates `x = EXPR` and returns the first diagnostic's headline (`t.river:1:COL: message`).
fn eval_err(expr: &str) -> String {
    let src = format!("x = {expr}\n");
    let file = crate::parse_file(&src).expect("parses");
    let diags = eval_body(&file.body, &Scope::new()).expect_err("fails");
    diags.0[0].headline("t.river", &src)
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

#[test]
fn url_encode_matches_go_query_escape() {
    // The example of Alloy's reference.
    assert_eq!(
        eval(r#"encoding.url_encode("string123!?$*&()'-=@~")"#),
        s("string123%21%3F%24%2A%26%28%29%27-%3D%40~")
    );
    assert_eq!(eval(r#"encoding.url_encode("a b/c")"#), s("a+b%2Fc"));
    assert_eq!(eval(r#"encoding.url_encode("é")"#), s("%C3%A9"));
    assert_eq!(eval(r#"encoding.url_encode("")"#), s(""));
}

#[test]
fn url_decode_inverts_url_encode_and_rejects_bad_escapes() {
    assert_eq!(
        eval(r#"encoding.url_decode("string123%21%3F%24%2A%26%28%29%27-%3D%40~")"#),
        s("string123!?$*&()'-=@~")
    );
    assert_eq!(eval(r#"encoding.url_decode("a+b%2fc%C3%A9")"#), s("a b/cé"));
    assert_eq!(
        eval(r#"encoding.url_decode(encoding.url_encode("p@ss w:rd/100%"))"#),
        s("p@ss w:rd/100%")
    );
    assert_eq!(
        eval_err(r#"encoding.url_decode("100%zz")"#),
        r#"t.river:1:5: encoding.url_decode invalid URL escape "%zz""#
    );
    assert_eq!(
        eval_err(r#"encoding.url_decode("50%")"#),
        r#"t.river:1:5: encoding.url_decode invalid URL escape "%""#
    );
    assert_eq!(
        eval_err(r#"encoding.url_encode("a", "b")"#),
        "t.river:1:5: encoding.url_encode expected 1 args, got 2"
    );
    assert_eq!(
        eval_err(r#"encoding.url_decode([1])"#),
        "t.river:1:25: [1] should be string, got array"
    );
}

#[test]
fn to_json_encodes_objects_with_sorted_keys() {
    assert_eq!(
        eval(
            r#"encoding.to_json({ modules = { http_2xx = { prober = "http", timeout = "5s", http = { headers = { Authorization = "Hello!" } } } } })"#
        ),
        s(
            r#"{"modules":{"http_2xx":{"http":{"headers":{"Authorization":"Hello!"}},"prober":"http","timeout":"5s"}}}"#
        )
    );
    assert_eq!(
        eval(r#"encoding.to_json({ n = 1, f = 1.5, b = true, z = null, a = [1, "x"] })"#),
        s(r#"{"a":[1,"x"],"b":true,"f":1.5,"n":1,"z":null}"#)
    );
    // Go's json.Marshal escapes HTML characters.
    assert_eq!(
        eval(r#"encoding.to_json({ q = "a<b>&c" })"#),
        s(r#"{"q":"a\u003cb\u003e\u0026c"}"#)
    );
    // Round trip through from_json.
    assert_eq!(
        eval(r#"encoding.from_json(encoding.to_json({ k = ["v", 2] }))"#),
        eval(r#"{ k = ["v", 2] }"#)
    );
}

#[test]
fn to_json_rejects_non_objects_and_values_without_json() {
    assert_eq!(
        eval_err(r#"encoding.to_json([1, 2])"#),
        "t.river:1:22: [1, 2] should be object, got array"
    );
    assert_eq!(
        eval_err(r#"encoding.to_json({ f = string.join })"#),
        "t.river:1:5: encoding.to_json cannot encode a function as JSON"
    );
    assert_eq!(
        eval_err(r#"encoding.to_json()"#),
        "t.river:1:5: encoding.to_json expected 1 args, got 0"
    );
}

const FRUIT: &str = r#"[{ type = "fruit", name = "apple" }, { type = "fruit", name = "banana" }, { type = "vegetable", name = "carrot" }, { name = "rock" }]"#;

#[test]
fn group_by_groups_in_order_of_first_appearance() {
    assert_eq!(
        eval(&format!(r#"array.group_by({FRUIT}, "type", false)"#)),
        eval(
            r#"[
                { type = "fruit", items = [{ type = "fruit", name = "apple" }, { type = "fruit", name = "banana" }] },
                { type = "vegetable", items = [{ type = "vegetable", name = "carrot" }] },
                { type = "", items = [{ name = "rock" }] },
            ]"#
        )
    );
    assert_eq!(
        eval(&format!(r#"array.group_by({FRUIT}, "type", true)"#)),
        eval(
            r#"[
                { type = "fruit", items = [{ type = "fruit", name = "apple" }, { type = "fruit", name = "banana" }] },
                { type = "vegetable", items = [{ type = "vegetable", name = "carrot" }] },
            ]"#
        )
    );
    assert_eq!(
        eval(r#"array.group_by([], "k", false)"#),
        Value::Array(vec![])
    );
}

#[test]
fn group_by_errors_name_the_argument() {
    assert_eq!(
        eval_err(r#"array.group_by([], "k")"#),
        "t.river:1:5: array.group_by group_by: expected 3 arguments, got 2"
    );
    assert_eq!(
        eval_err(r#"array.group_by("x", "k", true)"#),
        r#"t.river:1:20: "x" should be array, got string"#
    );
    assert_eq!(
        eval_err(r#"array.group_by([1], "k", true)"#),
        "t.river:1:20: [1] should be array of objects, got number element"
    );
    assert_eq!(
        eval_err(r#"array.group_by([], 1, true)"#),
        "t.river:1:24: 1 should be string, got number"
    );
    assert_eq!(
        eval_err(r#"array.group_by([], "k", "yes")"#),
        r#"t.river:1:29: "yes" should be bool, got string"#
    );
    assert_eq!(
        eval_err(r#"array.group_by([{ k = 1 }], "k", true)"#),
        r#"t.river:1:20: [{ k = 1 }] element 0: "k" should be string, got number"#
    );
}

#[test]
fn combine_maps_passthrough_keeps_unmatched_left_objects_once() {
    let left = r#"[{ instance = "a", team = "A" }, { instance = "b", team = "B" }]"#;
    let right = r#"[{ instance = "a", cluster = "prod" }, { instance = "c", cluster = "ops" }]"#;
    assert_eq!(
        eval(&format!(
            r#"array.combine_maps({left}, {right}, ["instance"])"#
        )),
        eval(r#"[{ instance = "a", team = "A", cluster = "prod" }]"#)
    );
    assert_eq!(
        eval(&format!(
            r#"array.combine_maps({left}, {right}, ["instance"], false)"#
        )),
        eval(r#"[{ instance = "a", team = "A", cluster = "prod" }]"#)
    );
    assert_eq!(
        eval(&format!(
            r#"array.combine_maps({left}, {right}, ["instance"], true)"#
        )),
        eval(
            r#"[{ instance = "a", team = "A", cluster = "prod" }, { instance = "b", team = "B" }]"#
        )
    );
}

#[test]
fn combine_maps_errors_name_the_argument() {
    assert_eq!(
        eval_err(r#"array.combine_maps([], [])"#),
        "t.river:1:5: array.combine_maps combine_maps: expected 3 or 4 arguments, got 2"
    );
    assert_eq!(
        eval_err(r#"array.combine_maps([], [], ["a"], 1)"#),
        "t.river:1:39: 1 should be bool, got number"
    );
    assert_eq!(
        eval_err(r#"array.combine_maps([], [], [])"#),
        "t.river:1:32: [] combine_maps: merge conditions must not be empty"
    );
    assert_eq!(
        eval_err(r#"array.combine_maps([], "r", ["a"])"#),
        r#"t.river:1:28: "r" should be array, got string"#
    );
    assert_eq!(
        eval_err(r#"array.combine_maps([1], [], ["a"])"#),
        "t.river:1:24: [1] should be array of objects, got number element"
    );
    assert_eq!(
        eval_err(r#"array.combine_maps([], [], [1])"#),
        "t.river:1:32: [1] should be array of strings, got number element"
    );
}

#[test]
fn deprecated_names_map_to_their_namespaced_replacements_which_exist() {
    assert_eq!(deprecated_replacement("env"), Some("sys.env"));
    assert_eq!(
        deprecated_replacement("json_decode"),
        Some("encoding.from_json")
    );
    assert_eq!(deprecated_replacement("coalesce"), None);
    assert_eq!(deprecated_replacement("json_path"), None);
    assert_eq!(deprecated_replacement("sys"), None);
    for (old, new) in DEPRECATED {
        // Both names resolve, to functions doing the same thing.
        let (ns, name) = new.split_once('.').expect("namespaced");
        let Some(Value::Object(members)) = super::lookup(ns) else {
            panic!("{ns} is not a namespace");
        };
        assert!(members.contains_key(name), "{new} is missing");
        assert!(
            matches!(super::lookup(old), Some(Value::Function(_))),
            "{old} does not resolve"
        );
    }
}

#[test]
fn deprecation_is_noted_once_per_name() {
    assert!(first_use("test-only-name-a"));
    assert!(!first_use("test-only-name-a"));
    assert!(!first_use("test-only-name-a"));
    assert!(first_use("test-only-name-b"));
}

#[test]
fn deprecated_and_namespaced_names_give_the_same_results() {
    assert_eq!(
        eval(r#"to_upper("abc")"#),
        eval(r#"string.to_upper("abc")"#)
    );
    assert_eq!(
        eval(r#"base64_decode("dGFuZ2VyaW5l")"#),
        eval(r#"encoding.from_base64("dGFuZ2VyaW5l")"#)
    );
    assert_eq!(
        eval(r#"concat([1], [2])"#),
        eval(r#"array.concat([1], [2])"#)
    );
}
