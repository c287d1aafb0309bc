use super::*;

#[test]
fn templates_render_every_placeholder_or_name_the_missing_one() {
    let vars = Vars(vec![]).set("PORT", 8443).set("NAME", "a.test");
    assert_eq!(
        vars.render("listen {{PORT}}; name {{NAME}}; again {{PORT}}")
            .expect("render"),
        "listen 8443; name a.test; again 8443"
    );
    let err = vars.render("x {{UPSTREAM}} y").expect_err("missing value");
    assert!(err.to_string().contains("{{UPSTREAM}}"), "{err}");
}

#[test]
fn every_template_of_every_contender_is_filled_by_start() {
    // The keys `start` sets; a template using another would fail at run time.
    let keys = [
        "WORK",
        "TRUST_DOMAIN",
        "ROOT",
        "BUNDLE",
        "B_NAME",
        "CHAIN",
        "KEY",
        "COMBINED",
        "PORT",
        "ADMIN_PORT",
        "TLS_NAME",
        "PLAIN_NAME",
        "TLS_BACKEND",
        "PLAIN_BACKEND",
        "TLS_BACKEND_PORT",
        "PLAIN_BACKEND_PORT",
        "INGRESS_PORT",
        "UPSTREAM",
        "UPSTREAM_PORT",
    ];
    let vars = keys.into_iter().fold(Vars(vec![]), |v, k| v.set(k, "x"));
    for name in Name::ALL.into_iter().filter(|n| *n != Name::Direct) {
        let (router, a, b) = templates(name);
        for t in [router, a, b] {
            vars.render(t).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
