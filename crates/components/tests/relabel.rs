//! `discovery.relabel` core: a table of relabeling cases with exact expected label sets, and
//! every validation error text. Expected hashmod values were computed independently
//! (Python: `int.from_bytes(md5(v).digest()[8:], "big") % m`).

use components::discovery::relabel::{compile_rules, process, Labels, Rule, RuleArgs};

/// Builder for a rule block.
#[derive(Clone)]
struct R(RuleArgs);

fn r(action: &str) -> R {
    R(RuleArgs {
        action: action.to_owned(),
        ..RuleArgs::default()
    })
}

impl R {
    fn src(mut self, s: &[&str]) -> Self {
        self.0.source_labels = Some(s.iter().map(|x| x.to_string()).collect());
        self
    }
    fn sep(mut self, s: &str) -> Self {
        self.0.separator = s.to_owned();
        self
    }
    fn regex(mut self, s: &str) -> Self {
        self.0.regex = s.to_owned();
        self
    }
    fn target(mut self, s: &str) -> Self {
        self.0.target_label = s.to_owned();
        self
    }
    fn repl(mut self, s: &str) -> Self {
        self.0.replacement = s.to_owned();
        self
    }
    fn modulus(mut self, m: u64) -> Self {
        self.0.modulus = m;
        self
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn compile(rules: &[R]) -> Vec<Rule> {
    let args: Vec<RuleArgs> = rules.iter().map(|r| r.0.clone()).collect();
    compile_rules(&args).unwrap_or_else(|(i, e)| panic!("rule {i} invalid: {e}"))
}

struct Case {
    name: &'static str,
    input: Vec<(&'static str, &'static str)>,
    rules: Vec<R>,
    /// `None`: the target is dropped.
    want: Option<Vec<(&'static str, &'static str)>>,
}

fn case(
    name: &'static str,
    input: &[(&'static str, &'static str)],
    rules: Vec<R>,
    want: Option<&[(&'static str, &'static str)]>,
) -> Case {
    Case {
        name,
        input: input.to_vec(),
        rules,
        want: want.map(|w| w.to_vec()),
    }
}

fn cases() -> Vec<Case> {
    let base: &[(&str, &str)] = &[("a", "foo"), ("b", "bar")];
    vec![
        // ---- replace ----
        case(
            "replace default copies value",
            base,
            vec![r("replace").src(&["a"]).target("c")],
            Some(&[("a", "foo"), ("b", "bar"), ("c", "foo")]),
        ),
        case(
            "replace expands group in replacement",
            base,
            vec![r("replace")
                .src(&["a"])
                .regex("f(o+)")
                .target("c")
                .repl("x${1}y")],
            Some(&[("a", "foo"), ("b", "bar"), ("c", "xooy")]),
        ),
        case(
            "replace no match leaves labels",
            base,
            vec![r("replace").src(&["a"]).regex("x(.*)").target("c")],
            Some(base),
        ),
        case(
            "replace regex is anchored at both ends",
            base,
            vec![r("replace").src(&["a"]).regex("o").target("c").repl("hit")],
            Some(base),
        ),
        case(
            "replace anchored prefix only does not match",
            base,
            vec![r("replace").src(&["a"]).regex("fo").target("c").repl("hit")],
            Some(base),
        ),
        case(
            "replace joins source labels with separator",
            base,
            vec![r("replace")
                .src(&["a", "b"])
                .sep(",")
                .regex("(.*),(.*)")
                .target("c")
                .repl("$2-$1")],
            Some(&[("a", "foo"), ("b", "bar"), ("c", "bar-foo")]),
        ),
        case(
            "replace default separator is semicolon",
            base,
            vec![r("replace").src(&["a", "b"]).target("c")],
            Some(&[("a", "foo"), ("b", "bar"), ("c", "foo;bar")]),
        ),
        case(
            "missing source label reads as empty",
            base,
            vec![r("replace")
                .src(&["missing", "a"])
                .regex(";(.*)")
                .target("c")],
            Some(&[("a", "foo"), ("b", "bar"), ("c", "foo")]),
        ),
        case(
            "replace with empty result deletes the target label",
            base,
            vec![r("replace").src(&["missing"]).target("a")],
            Some(&[("b", "bar")]),
        ),
        case(
            "replace literal replacement without source labels",
            base,
            vec![r("replace").target("job").repl("docker")],
            Some(&[("a", "foo"), ("b", "bar"), ("job", "docker")]),
        ),
        case(
            "replace $1x names group 1x which is empty",
            base,
            vec![r("replace").src(&["a"]).target("b").repl("$1x")],
            Some(&[("a", "foo")]),
        ),
        case(
            "replace ${1}x is group 1 then x",
            base,
            vec![r("replace").src(&["a"]).target("b").repl("${1}x")],
            Some(&[("a", "foo"), ("b", "foox")]),
        ),
        case(
            "replace named group $name",
            &[("a", "web-1")],
            vec![r("replace")
                .src(&["a"])
                .regex("(?P<svc>[a-z]+)-(?P<n>\\d+)")
                .target("c")
                .repl("$n:$svc")],
            Some(&[("a", "web-1"), ("c", "1:web")]),
        ),
        case(
            "replace braced named group ${name}",
            &[("a", "web-1")],
            vec![r("replace")
                .src(&["a"])
                .regex("(?P<svc>[a-z]+)-\\d+")
                .target("c")
                .repl("${svc}_app")],
            Some(&[("a", "web-1"), ("c", "web_app")]),
        ),
        case(
            "replace $svc_app names group svc_app (unknown, empty)",
            &[("a", "web-1")],
            vec![r("replace")
                .src(&["a"])
                .regex("(?P<svc>[a-z]+)-\\d+")
                .target("c")
                .repl("x$svc_app")],
            Some(&[("a", "web-1"), ("c", "x")]),
        ),
        case(
            "replace $$ is a literal dollar",
            base,
            vec![r("replace").src(&["a"]).target("c").repl("$$1")],
            Some(&[("a", "foo"), ("b", "bar"), ("c", "$1")]),
        ),
        case(
            "replace malformed $ is copied literally",
            base,
            vec![r("replace").src(&["a"]).target("c").repl("a$-b")],
            Some(&[("a", "foo"), ("b", "bar"), ("c", "a$-b")]),
        ),
        case(
            "replace unclosed brace is copied literally",
            base,
            vec![r("replace").src(&["a"]).target("c").repl("${1")],
            Some(&[("a", "foo"), ("b", "bar"), ("c", "${1")]),
        ),
        case(
            "replace $0 is the whole match",
            base,
            vec![r("replace")
                .src(&["a"])
                .regex("f(o)o")
                .target("c")
                .repl("$0/$1")],
            Some(&[("a", "foo"), ("b", "bar"), ("c", "foo/o")]),
        ),
        case(
            "replace out of range group is empty",
            base,
            vec![r("replace").src(&["a"]).target("c").repl("x$7")],
            Some(&[("a", "foo"), ("b", "bar"), ("c", "x")]),
        ),
        case(
            "replace expands target_label",
            &[("kv", "team=infra")],
            vec![r("replace")
                .src(&["kv"])
                .regex("(\\w+)=(.*)")
                .target("${1}_name")
                .repl("$2")],
            Some(&[("kv", "team=infra"), ("team_name", "infra")]),
        ),
        case(
            "replace skips an invalid expanded target_label",
            &[("v", "1abc")],
            vec![r("replace").src(&["v"]).target("$1").repl("x")],
            Some(&[("v", "1abc")]),
        ),
        case(
            "replace regex dot matches newline (?s)",
            &[("v", "a\nb")],
            vec![r("replace").src(&["v"]).regex("a.b").target("c").repl("nl")],
            Some(&[("c", "nl"), ("v", "a\nb")]),
        ),
        case(
            "replace overwrites an existing label",
            base,
            vec![r("replace").src(&["b"]).target("a")],
            Some(&[("a", "bar"), ("b", "bar")]),
        ),
        case(
            "replace on missing label with non-empty regex does nothing",
            base,
            vec![r("replace").src(&["missing"]).regex(".+").target("a")],
            Some(base),
        ),
        // ---- keep / drop ----
        case(
            "keep matching target",
            base,
            vec![r("keep").src(&["a"]).regex("f.*")],
            Some(base),
        ),
        case(
            "keep drops non-matching target",
            base,
            vec![r("keep").src(&["a"]).regex("b.*")],
            None,
        ),
        case(
            "keep regex anchored",
            base,
            vec![r("keep").src(&["a"]).regex("fo")],
            None,
        ),
        case(
            "keep on missing label with .+ drops",
            base,
            vec![r("keep").src(&["missing"]).regex(".+")],
            None,
        ),
        case(
            "drop matching target",
            base,
            vec![r("drop").src(&["b"]).regex("bar")],
            None,
        ),
        case(
            "drop keeps non-matching target",
            base,
            vec![r("drop").src(&["b"]).regex("baz")],
            Some(base),
        ),
        case(
            "drop with empty regex matches a missing label",
            base,
            vec![r("drop").src(&["missing"]).regex("")],
            None,
        ),
        case(
            "drop with alternation over joined labels",
            base,
            vec![r("drop").src(&["a", "b"]).regex("foo;(bar|baz)")],
            None,
        ),
        // ---- keepequal / dropequal ----
        case(
            "keepequal keeps equal",
            &[("a", "x"), ("b", "x")],
            vec![r("keepequal").src(&["a"]).target("b")],
            Some(&[("a", "x"), ("b", "x")]),
        ),
        case(
            "keepequal drops unequal",
            base,
            vec![r("keepequal").src(&["a"]).target("b")],
            None,
        ),
        case(
            "keepequal missing target equals empty source",
            base,
            vec![r("keepequal").src(&["missing"]).target("other")],
            Some(base),
        ),
        case(
            "dropequal drops equal",
            &[("a", "x"), ("b", "x")],
            vec![r("dropequal").src(&["a"]).target("b")],
            None,
        ),
        case(
            "dropequal keeps unequal",
            base,
            vec![r("dropequal").src(&["a"]).target("b")],
            Some(base),
        ),
        // ---- hashmod ----
        case(
            "hashmod md5 last 8 bytes big endian",
            base,
            vec![r("hashmod").src(&["a"]).modulus(1000).target("h")],
            Some(&[("a", "foo"), ("b", "bar"), ("h", "696")]),
        ),
        case(
            "hashmod over joined labels",
            &[("addr", "10.0.0.1:80"), ("svc", "web")],
            vec![r("hashmod").src(&["addr", "svc"]).modulus(7).target("h")],
            Some(&[("addr", "10.0.0.1:80"), ("h", "2"), ("svc", "web")]),
        ),
        case(
            "hashmod of empty value",
            base,
            vec![r("hashmod").src(&["missing"]).modulus(5).target("h")],
            Some(&[("a", "foo"), ("b", "bar"), ("h", "3")]),
        ),
        // ---- labelmap ----
        case(
            "labelmap copies matching names",
            &[("__meta_x", "1"), ("__meta_y", "2"), ("z", "3")],
            vec![r("labelmap").regex("__meta_(.*)")],
            Some(&[
                ("__meta_x", "1"),
                ("__meta_y", "2"),
                ("x", "1"),
                ("y", "2"),
                ("z", "3"),
            ]),
        ),
        case(
            "labelmap without matches changes nothing",
            base,
            vec![r("labelmap").regex("__meta_(.*)")],
            Some(base),
        ),
        case(
            "labelmap overwrites existing label and uses replacement",
            &[("__meta_a", "new"), ("pre_a", "old")],
            vec![r("labelmap").regex("__meta_(.*)").repl("pre_${1}")],
            Some(&[("__meta_a", "new"), ("pre_a", "new")]),
        ),
        case(
            "labelmap regex anchored on names",
            &[("x__meta_a", "1")],
            vec![r("labelmap").regex("__meta_(.*)")],
            Some(&[("x__meta_a", "1")]),
        ),
        // ---- labeldrop / labelkeep ----
        case(
            "labeldrop removes matching names",
            &[("__meta_x", "1"), ("__address__", "h:1"), ("job", "j")],
            vec![r("labeldrop").regex("__.*")],
            Some(&[("job", "j")]),
        ),
        case(
            "labeldrop is anchored",
            &[("a", "1"), ("ab", "2")],
            vec![r("labeldrop").regex("a")],
            Some(&[("ab", "2")]),
        ),
        case(
            "labelkeep keeps only matching names",
            &[("a", "1"), ("b", "2"), ("c", "3")],
            vec![r("labelkeep").regex("a|c")],
            Some(&[("a", "1"), ("c", "3")]),
        ),
        case(
            "labelkeep may empty the label set",
            base,
            vec![r("labelkeep").regex("zzz")],
            Some(&[]),
        ),
        // ---- lowercase / uppercase ----
        case(
            "lowercase",
            &[("a", "FoO")],
            vec![r("lowercase").src(&["a"]).target("l")],
            Some(&[("a", "FoO"), ("l", "foo")]),
        ),
        case(
            "uppercase joins sources",
            base,
            vec![r("uppercase").src(&["a", "b"]).target("u")],
            Some(&[("a", "foo"), ("b", "bar"), ("u", "FOO;BAR")]),
        ),
        case(
            "lowercase non-ascii",
            &[("a", "ÄÖB")],
            vec![r("lowercase").src(&["a"]).target("a")],
            Some(&[("a", "äöb")]),
        ),
        case(
            "lowercase of missing label deletes target",
            base,
            vec![r("lowercase").src(&["missing"]).target("a")],
            Some(&[("b", "bar")]),
        ),
        // ---- chains ----
        case(
            "rules apply top-down and see earlier results",
            &[("__meta_docker_container_name", "/web")],
            vec![
                r("replace")
                    .src(&["__meta_docker_container_name"])
                    .regex("/(.*)")
                    .target("service_name"),
                r("keep").src(&["service_name"]).regex("web"),
                r("labeldrop").regex("__meta_.*"),
            ],
            Some(&[("service_name", "web")]),
        ),
        case(
            "a drop stops processing",
            base,
            vec![
                r("drop").src(&["a"]).regex("foo"),
                r("replace").target("never").repl("x"),
            ],
            None,
        ),
        case("no rules is identity", base, vec![], Some(base)),
        case(
            "docker example: service_name from the container name",
            &[
                ("__address__", "172.17.0.2:80"),
                ("__meta_docker_container_name", "/my-app"),
            ],
            vec![r("replace")
                .src(&["__meta_docker_container_name"])
                .target("service_name")],
            Some(&[
                ("__address__", "172.17.0.2:80"),
                ("__meta_docker_container_name", "/my-app"),
                ("service_name", "/my-app"),
            ]),
        ),
    ]
}

#[test]
fn relabel_table() {
    let cases = cases();
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let rules = compile(&c.rules);
        let got = process(labels(&c.input), &rules);
        let want = c.want.as_ref().map(|w| labels(w));
        if got != want {
            failures.push(format!("{}: got {got:?}, want {want:?}", c.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn err(rule: R) -> String {
    match compile_rules(&[rule.0]) {
        Ok(_) => panic!("rule unexpectedly valid"),
        Err((_, e)) => e.to_string(),
    }
}

#[test]
fn validation_errors() {
    let table: Vec<(R, &str)> = vec![
        (r(""), "relabel action cannot be empty"),
        (r("x"), "unrecognized action type \"x\""),
        (r("Replace").target("a"), "unrecognized action type \"Replace\""),
        (
            r("hashmod").src(&["a"]).target("h"),
            "relabel configuration for hashmod requires non-zero modulus",
        ),
        (
            r("replace").src(&["a"]),
            "relabel configuration for replace action requires 'target_label' value",
        ),
        (
            r("hashmod").src(&["a"]).modulus(3),
            "relabel configuration for hashmod action requires 'target_label' value",
        ),
        (
            r("lowercase").src(&["a"]),
            "relabel configuration for lowercase action requires 'target_label' value",
        ),
        (
            r("keepequal").src(&["a"]),
            "relabel configuration for keepequal action requires 'target_label' value",
        ),
        (
            r("lowercase").src(&["a"]).target("x-y"),
            "\"x-y\" is invalid 'target_label' for lowercase action",
        ),
        (
            r("uppercase").src(&["a"]).target("1x"),
            "\"1x\" is invalid 'target_label' for uppercase action",
        ),
        (
            r("replace").src(&["a"]).target("1abc"),
            "\"1abc\" is invalid 'target_label' for replace action",
        ),
        (
            r("replace").src(&["a"]).target("${1"),
            "\"${1\" is invalid 'target_label' for replace action",
        ),
        (
            r("dropequal").src(&["a"]).target("a.b"),
            "\"a.b\" is invalid 'target_label' for dropequal action",
        ),
        (
            r("lowercase").src(&["a"]).target("l").repl("x"),
            "'replacement' can not be set for lowercase action",
        ),
        (
            r("labelmap").regex("(.*)").repl("a-$1"),
            "\"a-$1\" is invalid 'replacement' for labelmap action",
        ),
        (
            r("hashmod").src(&["a"]).modulus(2).target("$1"),
            "\"$1\" is invalid 'target_label' for hashmod action",
        ),
        (
            r("labeldrop").regex("a").src(&["a"]),
            "labeldrop action requires only 'regex', and no other fields",
        ),
        (
            r("labeldrop").regex("a").src(&[]),
            "labeldrop action requires only 'regex', and no other fields",
        ),
        (
            r("labelkeep").regex("a").target("t"),
            "labelkeep action requires only 'regex', and no other fields",
        ),
        (
            r("labelkeep").regex("a").sep(","),
            "labelkeep action requires only 'regex', and no other fields",
        ),
        (
            r("labeldrop").regex("a").modulus(2),
            "labeldrop action requires only 'regex', and no other fields",
        ),
        (
            r("labeldrop").repl("x"),
            "labeldrop action requires only 'regex', and no other fields",
        ),
        (
            r("keepequal").src(&["a"]).target("b").regex("x"),
            "keepequal action requires only 'source_labels' and 'target_label', and no other fields",
        ),
        (
            r("dropequal").src(&["a"]).target("b").sep(","),
            "dropequal action requires only 'source_labels' and 'target_label', and no other fields",
        ),
        (
            r("dropequal").src(&["a"]).target("b").modulus(4),
            "dropequal action requires only 'source_labels' and 'target_label', and no other fields",
        ),
    ];
    for (rule, want) in table {
        assert_eq!(err(rule), want);
    }
}

#[test]
fn invalid_regex_names_regex_and_cause() {
    let e = err(r("keep").src(&["a"]).regex("foo("));
    assert!(e.starts_with("invalid regex \"foo(\": "), "{e}");
    assert!(e.contains("unclosed group"), "{e}");
    let e = err(r("keep").src(&["a"]).regex("a{2,1}"));
    assert!(e.starts_with("invalid regex \"a{2,1}\": "), "{e}");
}

#[test]
fn compile_reports_index_of_bad_rule() {
    let args = vec![
        r("keep").src(&["a"]).0,
        r("replace").src(&["a"]).target("ok").0,
        r("nope").0,
    ];
    let (i, e) = compile_rules(&args).unwrap_err();
    assert_eq!(i, 2);
    assert_eq!(e.to_string(), "unrecognized action type \"nope\"");
}

#[test]
fn valid_templated_targets_accepted() {
    for t in ["$1", "${1}", "a$1", "_x${name}y", "$name_z", "ab"] {
        compile(&[r("replace").src(&["a"]).target(t)]);
    }
}
