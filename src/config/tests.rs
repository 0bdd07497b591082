use super::*;
use auth::sha256;

fn env(name: &str) -> Option<String> {
    match name {
        "OPENAI_API_KEY" => Some("sk-test".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn load(text: &str) -> Result<Config, Vec<String>> {
    Config::from_yaml(text, &env)
}

const GOOD: &str = r#"
server:
  listen: 127.0.0.1:8080
  max_body_bytes: 1048576
auth:
  keys:
    - { name: alice, key: secret-alice, rpm: 5, models: ["gpt-*", fast] }
    - { name: bob, key_sha256: "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b" }
providers:
  - id: openai
    kind: openai
    base_url: https://api.openai.com
    api_keys: ["${OPENAI_API_KEY}"]
    retryable_status: "429,500,502-504"
  - id: claude
    kind: anthropic
    base_url: http://127.0.0.1:9000/
    api_keys: ["${ANTHROPIC_API_KEY:-}"]
models:
  - name: fast
    upstreams:
      - { provider: openai, model: gpt-4o-mini, weight: 3 }
      - { provider: claude, model: claude-haiku-4-5 }
"#;

#[test]
fn a_good_config_resolves() {
    let c = load(GOOD).unwrap();
    assert_eq!(c.server.listen, ["127.0.0.1:8080"]);
    assert_eq!(c.server.max_body_bytes, 1 << 20);
    assert_eq!(c.providers.len(), 2);
    let openai = &c.providers[0];
    assert_eq!(openai.api_keys, ["sk-test"]);
    assert!(openai.enabled);
    assert_eq!(openai.base.host, "api.openai.com");
    assert_eq!(openai.base.port, 443);
    assert!(openai.base.tls);
    assert!(
        openai.retryable.contains(503)
            && !openai.retryable.contains(501)
            && openai.retryable.contains(429)
    );
    // All keys empty: disabled, not an error.
    assert!(!c.providers[1].enabled);
    assert_eq!(c.providers[1].base.path, "");
    let fast = c.logical_model("fast").unwrap();
    assert_eq!(fast.upstreams[0].weight, 3.0);
    assert_eq!(fast.upstreams[1].provider, 1);
    let alice = &c.auth.keys[0];
    assert!(alice.allows("gpt-4o") && alice.allows("fast") && !alice.allows("claude-x"));
    assert!(c.auth.keys[1].allows("anything"));
    assert_eq!(c.auth.keys[1].sha256, sha256("secret"));
}

#[test]
fn every_problem_is_reported_with_its_key_path() {
    let bad = r#"
providers:
  - { id: a, kind: openai, base_url: "ftp://x", retryable_status: "504-502" }
  - { id: a, kind: mistral, base_url: "http://h" }
models:
  - name: m
    upstreams: [{ provider: nope, model: x }]
"#;
    let errs = load(bad).unwrap_err();
    let has = |s: &str| errs.iter().any(|e| e.starts_with(s));
    assert!(has("providers[0].base_url:"), "{errs:?}");
    assert!(has("providers[0].retryable_status:"), "{errs:?}");
    assert!(has("providers[1].id: duplicate"), "{errs:?}");
    assert!(has("providers[1].kind:"), "{errs:?}");
    assert!(
        has("models[0].upstreams[0].provider: unknown provider \"nope\""),
        "{errs:?}"
    );
}

#[test]
fn unknown_keys_and_wrong_types_are_errors() {
    let errs = load("server:\n  listen: 127.0.0.1:1\n  lisen: x\n").unwrap_err();
    assert!(
        errs[0].starts_with("server.lisen: unknown field"),
        "{errs:?}"
    );
    let errs = load("providers:\n  - { id: a, kind: openai, base_url: http://h, weight: heavy }\n")
        .unwrap_err();
    assert!(errs[0].starts_with("providers[0].weight:"), "{errs:?}");
    let errs = load("server: [\n").unwrap_err();
    assert!(errs[0].starts_with("yaml:"), "{errs:?}");
}

#[test]
fn unset_variables_are_reported() {
    let errs = load("auth:\n  admin_keys: [\"${UNSET_VAR}\"]\n").unwrap_err();
    assert_eq!(
        errs,
        ["auth.admin_keys[0]: environment variable UNSET_VAR is not set"]
    );
}

#[test]
fn status_sets() {
    let s = StatusSet::parse("429, 500,502-504").unwrap();
    assert!(
        s.contains(429)
            && s.contains(500)
            && s.contains(503)
            && !s.contains(501)
            && !s.contains(505)
    );
    assert!(StatusSet::parse("600").is_err());
    assert!(StatusSet::parse("").is_err());
    assert!(StatusSet::parse("5xx").is_err());
}

#[test]
fn empty_file_gives_defaults() {
    let c = load("").unwrap();
    assert_eq!(c.server.listen, ["127.0.0.1:8080"]);
    assert_eq!(c.server.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    assert!(c.store.redis_url.is_none());
    assert_eq!(c.server.pid_file, DEFAULT_PID_FILE);
    assert_eq!(c.server.upgrade_sock, DEFAULT_UPGRADE_SOCK);
    assert_eq!(c.server.header_timeout, Duration::from_secs(10));
    assert_eq!(c.server.keepalive_timeout, Duration::from_secs(60));
    assert_eq!(c.server.max_header_bytes, 65536);
    assert_eq!(c.server.max_connections, DEFAULT_MAX_CONNECTIONS);
    assert_eq!(c.server.min_body_rate, DEFAULT_MIN_BODY_RATE);
    assert!(c.warnings().is_empty());
}

#[test]
fn client_limits_are_validated_by_key_path() {
    let e = load(
        "server:\n  header_timeout_ms: 0\n  keepalive_timeout_ms: 0\n  body_timeout_ms: 0\n  write_timeout_ms: 0\n  max_connections: 0\n  max_header_bytes: 10\n  pid_file: run/x.pid\n  min_body_rate_bytes_per_s: 0\n",
    )
    .unwrap_err();
    for key in [
        "server.header_timeout_ms: must be positive",
        "server.keepalive_timeout_ms: must be positive",
        "server.body_timeout_ms: must be positive",
        "server.write_timeout_ms: must be positive",
        "server.max_connections: must be positive",
        "server.max_header_bytes: must be between 1024",
        "server.pid_file: \"run/x.pid\" must be an absolute path",
        "server.min_body_rate_bytes_per_s: must be between 1 and",
    ] {
        assert!(e.iter().any(|p| p.starts_with(key)), "{key} not in {e:?}");
    }
}

#[test]
fn an_open_gateway_on_a_public_address_must_say_so() {
    let e = load("server:\n  listen: [127.0.0.1:8080, 0.0.0.0:8081]\n").unwrap_err();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("server.listen[1]: 0.0.0.0:8081"), "{e:?}");
    assert!(e[0].contains("auth.open: true"), "{e:?}");
    let c = load("server:\n  listen: 0.0.0.0:8081\nauth:\n  open: true\n").unwrap();
    assert_eq!(c.warnings().len(), 1);
    assert!(c.warnings()[0].contains("0.0.0.0:8081"));
    // Client keys make any address fine; loopback needs nothing.
    load("server:\n  listen: 0.0.0.0:8081\nauth:\n  keys: [{ name: a, key: k }]\n").unwrap();
    load("server:\n  listen: \"[::1]:8081\"\n").unwrap();
}

/// The systemd unit and the defaults agree: its PIDFile is the default pid
/// file, its RuntimeDirectory holds it, and it runs sandboxed as its own user.
#[test]
fn the_systemd_unit_matches_the_defaults() {
    let unit = include_str!("../../systemd/apiproxy.service");
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    let has = |l: &str| lines.contains(&l);
    assert!(has(&format!("PIDFile={DEFAULT_PID_FILE}")), "{unit}");
    let dir = DEFAULT_RUNTIME_DIR.strip_prefix("/run/").unwrap();
    assert!(has(&format!("RuntimeDirectory={dir}")), "{unit}");
    assert!(has("RuntimeDirectoryMode=0700"), "{unit}");
    assert!(Path::new(DEFAULT_PID_FILE).starts_with(DEFAULT_RUNTIME_DIR));
    assert!(Path::new(DEFAULT_UPGRADE_SOCK).starts_with(DEFAULT_RUNTIME_DIR));
    for l in [
        "User=apiproxy",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        // The suggested store.path lives there: writable under ProtectSystem.
        "StateDirectory=apiproxy",
        "SystemCallFilter=@system-service",
        "RestrictRealtime=yes",
        "ProtectProc=invisible",
    ] {
        assert!(has(l), "{l} missing from the unit:\n{unit}");
    }
    let shipped = include_str!("../../conf/apiproxy.yaml");
    assert!(
        shipped.contains("path: /var/lib/apiproxy/"),
        "the shipped config suggests store.path in the state directory"
    );
}

/// The shipped config passes `-t` without client keys because it listens on
/// loopback only.
#[test]
fn the_shipped_config_listens_on_loopback() {
    let c = load(include_str!("../../conf/apiproxy.yaml")).unwrap();
    assert!(c.auth.keys.is_empty());
    for a in &c.server.listen {
        assert!(a.parse::<SocketAddr>().unwrap().ip().is_loopback(), "{a}");
    }
    assert_eq!(c.server.pid_file, DEFAULT_PID_FILE);
}

#[test]
fn context_byte_bounds_and_key_prefix_are_checked() {
    let c = load(GOOD).expect("valid");
    assert_eq!(c.context.max_entry_bytes, 32768);
    assert_eq!(c.context.max_session_bytes, 262144);
    let bad = format!(
        "{GOOD}context:\n  max_entry_bytes: 100\n  max_session_bytes: 50\nstore:\n  key_prefix: \"gw{{x}}:\"\n"
    );
    let problems = load(&bad).unwrap_err();
    for key in [
        "context.max_entry_bytes",
        "context.max_session_bytes",
        "store.key_prefix",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(key)),
            "{key}: {problems:?}"
        );
    }
}

#[test]
fn keys_as_strings_or_objects() {
    let c = load(
        r#"
providers:
  - id: p
    kind: openai
    base_url: http://127.0.0.1:9
    key_strategy: fill-first
    api_keys: ["${OPENAI_API_KEY}", { key: "${EMPTY}", weight: 5 }, { key: k3, weight: 2.5, max_concurrency: 4, max_qps: 10 }]
models:
  - { name: pool, hedge_after_ms: 250, upstreams: [{ provider: p, model: m }] }
"#,
    )
    .unwrap();
    let p = &c.providers[0];
    // The empty key is left out with its options.
    assert_eq!(p.api_keys, ["sk-test", "k3"]);
    assert_eq!(p.key_options.len(), 2);
    assert_eq!(p.key_options[0], KeyOptions::default());
    assert_eq!(
        p.key_options[1],
        KeyOptions {
            weight: 2.5,
            max_concurrency: Some(4),
            max_qps: Some(10)
        }
    );
    assert_eq!(p.key_strategy, KeyStrategy::FillFirst);
    assert_eq!(
        c.logical_model("pool").unwrap().hedge_after,
        Some(Duration::from_millis(250))
    );
    assert_eq!(c.routing.hedge_budget_percent, 10);
    assert_eq!(c.routing.hedge_min_concurrency, 2);
    assert!(!c.logical_model("pool").unwrap().hedge_non_stream);
    let d = load(GOOD).unwrap();
    assert_eq!(d.providers[0].key_strategy, KeyStrategy::RoundRobin);
    assert_eq!(d.logical_model("fast").unwrap().hedge_after, None);
}

#[test]
fn response_cache_settings_resolve_and_bad_ones_are_named() {
    let c = load(GOOD).unwrap();
    assert_eq!(c.cache, CacheSettings::default());
    assert_eq!(c.cache.scope, CacheScope::Key);
    assert_eq!(c.cache.max_entry_bytes, 1024 * 1024);
    assert_eq!(c.logical_model("fast").unwrap().cache_ttl, None);
    assert_eq!(c.store_options().cache_max_bytes, c.cache.max_bytes);

    let on = GOOD.replace(
        "  - name: fast\n",
        "  - name: fast\n    cache_ttl_seconds: 300\n",
    ) + "cache: { max_entry_bytes: 4096, max_bytes: 65536, scope: global }\n";
    let c = load(&on).unwrap();
    assert_eq!(
        c.logical_model("fast").unwrap().cache_ttl,
        Some(Duration::from_secs(300))
    );
    assert_eq!(
        c.cache,
        CacheSettings {
            max_entry_bytes: 4096,
            max_bytes: 65536,
            scope: CacheScope::Global
        }
    );
    assert_eq!(c.store_options().cache_max_bytes, 65536);

    let bad = GOOD.replace(
        "  - name: fast\n",
        "  - name: fast\n    cache_ttl_seconds: 0\n",
    ) + "cache: { max_entry_bytes: 4096, max_bytes: 1024, scope: everyone }\n";
    let problems = load(&bad).unwrap_err();
    for want in [
        "models[0].cache_ttl_seconds: must be between 1 and",
        "cache.max_bytes: 1024 is smaller than cache.max_entry_bytes (4096)",
        "cache.scope: \"everyone\" is not key or global",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(want)),
            "{want:?} not in {problems:?}"
        );
    }
}

#[test]
fn a_provider_debug_print_shows_no_credential() {
    let c = load(
        r#"
providers:
  - id: az
    kind: azure
    base_url: https://res.openai.azure.com
    api_version: 2024-10-21
    azure_ad_token: eyJ-entra-token-secret
    models: [{ name: gpt-4o, deployment: prod-4o }]
    headers: { x-team-secret: hunter2-header-value }
  - id: openai
    kind: openai
    base_url: https://api.openai.com
    api_keys: ["sk-plain-key-secret", "${OPENAI_API_KEY}"]
"#,
    )
    .unwrap();
    let shown = format!("{:?}", c.providers);
    for secret in [
        "eyJ-entra-token-secret",
        "hunter2-header-value",
        "sk-plain-key-secret",
        "sk-test",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(
        shown.contains("x-team-secret") && shown.contains("<2 keys>"),
        "{shown}"
    );
}
