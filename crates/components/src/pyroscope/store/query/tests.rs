use super::*;

#[test]
fn profile_types_parse_into_their_parts() {
    let t = ProfileType::parse("memory:alloc_space:bytes:space:bytes").unwrap();
    assert_eq!(
        (
            t.name.as_str(),
            t.sample_type.as_str(),
            t.sample_unit.as_str()
        ),
        ("memory", "alloc_space", "bytes")
    );
    assert_eq!(
        (t.period_type.as_str(), t.period_unit.as_str()),
        ("space", "bytes")
    );
    for bad in ["", "a:b", "a:b:c:d:e:f", ":b:c:d:e"] {
        assert!(ProfileType::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn ranges_and_steps_are_bounded() {
    assert!(TimeRange::new(10, 5).is_err());
    assert!(TimeRange::new(5, 5).is_err());
    let day = 86_400_000;
    assert!(TimeRange::new(0, 31 * day).is_ok());
    let e = TimeRange::new(0, 32 * day).unwrap_err().to_string();
    assert!(e.contains("at most 744 hours"), "{e}");
    assert_eq!(TimeRange::optional(0, 0).unwrap(), None);
    assert!(TimeRange::optional(5, 1).is_err());
    let r = TimeRange::new(0, day).unwrap();
    assert!(check_step(r, 15_000).is_ok());
    assert!(check_step(r, 0).is_err());
    let e = check_step(r, 1000).unwrap_err().to_string();
    assert!(e.contains("86400 points"), "{e}");
}
