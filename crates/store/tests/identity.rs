//! The `IdentityStore` contract on every backend: users, clients, devices, sessions,
//! authorization requests and codes, grants, access and refresh tokens, jtis — including the
//! races (one code, one refresh token, many concurrent users) and revocations that must bite
//! on the very next lookup.

mod common;

use portico_store::identity::{
    AuthRequestRow, ClientRow, CodeRow, GrantRow, PatientLink, Redeemed, Rotated, SessionRow, UserRow,
};
use portico_store::{IdentityStore, SqlStore, StoreError};

const T0: i64 = 1_700_000_000_000;
const HOUR: i64 = 3_600_000;

fn user(id: &str, username: &str) -> UserRow {
    UserRow {
        id: id.into(),
        username: username.into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        role: "patient".into(),
        display_name: format!("User {id}"),
        fhir_user: Some(format!("Patient/{id}")),
        links: vec![PatientLink { patient: id.into(), via: None, name: Some("Me".into()) }],
        totp_secret: None,
        disabled: false,
        failed_logins: 0,
        locked_until_ms: 0,
        created_ms: T0,
    }
}

fn client(id: &str) -> ClientRow {
    ClientRow {
        client_id: id.into(),
        name: format!("App {id}"),
        auth_method: "none".into(),
        secret_hash: None,
        redirect_uris: vec![format!("https://{id}.example/cb"), "http://127.0.0.1/cb".into()],
        scopes: "openid fhirUser launch/patient patient/*.rs offline_access".into(),
        jwks: None,
        jwks_url: None,
        disabled: false,
        created_ms: T0,
    }
}

fn grant(id: &str, user: Option<&str>, client: &str, device: Option<&str>) -> GrantRow {
    GrantRow {
        id: id.into(),
        user_id: user.map(str::to_string),
        client_id: client.into(),
        device_id: device.map(str::to_string),
        scope: "patient/*.rs offline_access".into(),
        patient: user.map(str::to_string),
        stepup_ms: None,
        auth_time_ms: T0,
        created_ms: T0,
        revoked_ms: None,
        revoked_reason: None,
    }
}

fn session(id_hash: &str, user: &str, device: &str, at: i64) -> SessionRow {
    SessionRow {
        id_hash: id_hash.into(),
        user_id: user.into(),
        device_id: device.into(),
        csrf: format!("csrf-{id_hash}"),
        created_ms: at,
        last_seen_ms: at,
        stepup_ms: None,
        acting_for: None,
        revoked: false,
    }
}

fn code(hash: &str, grant_id: &str, client: &str) -> CodeRow {
    CodeRow {
        code_hash: hash.into(),
        client_id: client.into(),
        redirect_uri: format!("https://{client}.example/cb"),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        nonce: Some("n-1".into()),
        grant_id: grant_id.into(),
        created_ms: T0,
        expires_ms: T0 + 60_000,
    }
}

/// A user `u1` with client `app`, a device, a session `s1` on it and an active grant `g1`
/// (on that device) with access token `at1` and refresh token `rt1`.
async fn world(s: &SqlStore) -> String {
    s.user_create(&user("u1", "alice")).await.unwrap();
    s.client_put(&client("app")).await.unwrap();
    let device = s.device_touch("u1", "app", "Firefox", T0).await.unwrap();
    s.session_create(&session("s1", "u1", &device, T0)).await.unwrap();
    s.grant_create(&grant("g1", Some("u1"), "app", Some(&device))).await.unwrap();
    s.access_put("at1", "g1", T0 + HOUR).await.unwrap();
    s.refresh_put("rt1", "g1", T0, T0 + 24 * HOUR).await.unwrap();
    assert!(s.access_lookup("at1", T0).await.unwrap().is_some());
    assert!(s.session_get("s1", T0, HOUR, 12 * HOUR).await.unwrap().is_some());
    device
}

async fn revoked_reason(s: &SqlStore, grant: &str) -> Option<String> {
    let g = s.grant_get(grant).await.unwrap().expect("grant");
    assert_eq!(g.revoked_ms.is_some(), g.revoked_reason.is_some());
    g.revoked_reason
}

#[tokio::test]
async fn users_are_created_found_listed_and_unique_by_username() {
    for s in common::stores().await {
        let mut bob = user("u2", "bob");
        bob.links.push(PatientLink { patient: "kid".into(), via: Some("RelatedPerson/rp-1".into()), name: None });
        bob.totp_secret = Some("JBSWY3DPEHPK3PXP".into());
        bob.fhir_user = None;
        s.user_create(&bob).await.unwrap();
        s.user_create(&user("u1", "alice")).await.unwrap();
        assert_eq!(s.user_by_id("u2").await.unwrap(), Some(bob.clone()));
        assert_eq!(s.user_by_username("bob").await.unwrap(), Some(bob.clone()));
        assert_eq!(s.user_by_username("Bob").await.unwrap(), None, "usernames are compared as stored");
        assert_eq!(s.user_by_id("nobody").await.unwrap(), None);
        let names: Vec<String> = s.users_list().await.unwrap().into_iter().map(|u| u.username).collect();
        assert_eq!(names, ["alice", "bob"]);
        let taken = s.user_create(&user("u3", "bob")).await;
        assert!(matches!(taken, Err(StoreError::Conflict)), "{taken:?}");
        assert_eq!(s.users_list().await.unwrap().len(), 2);
    }
}

#[tokio::test]
async fn failed_logins_lock_at_the_threshold_and_success_resets() {
    for s in common::stores().await {
        s.user_create(&user("u1", "alice")).await.unwrap();
        let a = s.user_login_failed("u1", T0, 3, 60_000).await.unwrap().unwrap();
        assert_eq!((a.failed_logins, a.locked_until_ms), (1, 0));
        let b = s.user_login_failed("u1", T0 + 1, 3, 60_000).await.unwrap().unwrap();
        assert_eq!((b.failed_logins, b.locked_until_ms), (2, 0));
        let c = s.user_login_failed("u1", T0 + 2, 3, 60_000).await.unwrap().unwrap();
        assert_eq!((c.failed_logins, c.locked_until_ms), (3, T0 + 2 + 60_000));
        assert_eq!(s.user_by_id("u1").await.unwrap().unwrap().locked_until_ms, T0 + 60_002);
        s.user_login_succeeded("u1").await.unwrap();
        let d = s.user_by_id("u1").await.unwrap().unwrap();
        assert_eq!((d.failed_logins, d.locked_until_ms), (0, 0));
        assert_eq!(s.user_login_failed("nobody", T0, 3, 1).await.unwrap(), None);
    }
}

#[tokio::test]
async fn concurrent_failed_logins_all_count() {
    for s in common::stores().await {
        s.user_create(&user("u1", "alice")).await.unwrap();
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move { s.user_login_failed("u1", T0 + i, 5, 1000).await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let u = s.user_by_id("u1").await.unwrap().unwrap();
        assert_eq!(u.failed_logins, 10);
        assert!(u.locked_until_ms > T0);
    }
}

#[tokio::test]
async fn totp_is_set_and_cleared() {
    for s in common::stores().await {
        s.user_create(&user("u1", "alice")).await.unwrap();
        s.user_set_totp("u1", Some("JBSWY3DPEHPK3PXP")).await.unwrap();
        assert_eq!(s.user_by_id("u1").await.unwrap().unwrap().totp_secret.as_deref(), Some("JBSWY3DPEHPK3PXP"));
        s.user_set_totp("u1", None).await.unwrap();
        assert_eq!(s.user_by_id("u1").await.unwrap().unwrap().totp_secret, None);
    }
}

#[tokio::test]
async fn disabling_a_user_ends_sessions_and_grants_at_once() {
    for s in common::stores().await {
        world(&s).await;
        assert!(s.user_set_disabled("u1", true, T0 + 5).await.unwrap());
        assert!(s.user_by_id("u1").await.unwrap().unwrap().disabled);
        assert!(s.access_lookup("at1", T0 + 6).await.unwrap().is_none());
        assert!(s.session_get("s1", T0 + 6, HOUR, 12 * HOUR).await.unwrap().is_none());
        assert_eq!(revoked_reason(&s, "g1").await.as_deref(), Some("user-disabled"));
        assert_eq!(s.grant_get("g1").await.unwrap().unwrap().revoked_ms, Some(T0 + 5));
        assert_eq!(s.refresh_rotate("rt1", "rt2", T0 + 7, T0 + HOUR, 1000).await.unwrap(), Rotated::Invalid);
        // Enabling again restores the account, not what was revoked.
        assert!(s.user_set_disabled("u1", false, T0 + 8).await.unwrap());
        assert!(!s.user_by_id("u1").await.unwrap().unwrap().disabled);
        assert!(s.access_lookup("at1", T0 + 9).await.unwrap().is_none());
        assert!(s.session_get("s1", T0 + 9, HOUR, 12 * HOUR).await.unwrap().is_none());
        assert!(!s.user_set_disabled("nobody", true, T0).await.unwrap());
    }
}

#[tokio::test]
async fn a_disabled_user_is_refused_even_with_a_live_grant() {
    for s in common::stores().await {
        world(&s).await;
        // A grant made while the user is disabled (e.g. by a racing code redemption) is
        // still refused by the lookup's own join.
        s.user_set_disabled("u1", true, T0 + 1).await.unwrap();
        let device = s.device_touch("u1", "app", "Other", T0 + 2).await.unwrap();
        s.grant_create(&grant("g2", Some("u1"), "app", Some(&device))).await.unwrap();
        s.access_put("at2", "g2", T0 + HOUR).await.unwrap();
        s.session_create(&session("s2", "u1", &device, T0 + 2)).await.unwrap();
        assert!(s.access_lookup("at2", T0 + 3).await.unwrap().is_none());
        assert!(s.session_get("s2", T0 + 3, HOUR, 12 * HOUR).await.unwrap().is_none());
        s.user_set_disabled("u1", false, T0 + 4).await.unwrap();
        assert!(s.access_lookup("at2", T0 + 5).await.unwrap().is_some());
        assert!(s.session_get("s2", T0 + 5, HOUR, 12 * HOUR).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn a_new_password_keeps_only_the_changing_session_and_revokes_every_grant() {
    for s in common::stores().await {
        let device = world(&s).await;
        s.session_create(&session("s2", "u1", &device, T0)).await.unwrap();
        s.session_create(&session("s3", "u1", &device, T0)).await.unwrap();
        s.user_set_password("u1", "$argon2id$new", Some("s2"), T0 + 10).await.unwrap();
        assert_eq!(s.user_by_id("u1").await.unwrap().unwrap().password_hash, "$argon2id$new");
        assert!(s.session_get("s2", T0 + 11, HOUR, 12 * HOUR).await.unwrap().is_some());
        assert!(s.session_get("s1", T0 + 11, HOUR, 12 * HOUR).await.unwrap().is_none());
        assert!(s.session_get("s3", T0 + 11, HOUR, 12 * HOUR).await.unwrap().is_none());
        assert!(s.access_lookup("at1", T0 + 11).await.unwrap().is_none());
        assert_eq!(revoked_reason(&s, "g1").await.as_deref(), Some("password-changed"));
        // Without a session to keep (a reset by email or by an admin), every one ends.
        s.user_set_password("u1", "$argon2id$newer", None, T0 + 20).await.unwrap();
        assert!(s.session_get("s2", T0 + 21, HOUR, 12 * HOUR).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn clients_are_put_replaced_listed_disabled_and_removed() {
    for s in common::stores().await {
        let mut app = client("app");
        app.auth_method = "private_key_jwt".into();
        app.jwks = Some(r#"{"keys":[]}"#.into());
        s.client_put(&app).await.unwrap();
        s.client_put(&client("another")).await.unwrap();
        assert_eq!(s.client_get("app").await.unwrap(), Some(app.clone()));
        assert_eq!(s.client_get("none").await.unwrap(), None);
        let mut replaced = app.clone();
        replaced.name = "Renamed".into();
        replaced.redirect_uris = vec!["https://new.example/cb".into()];
        replaced.secret_hash = Some("ab".repeat(32));
        replaced.created_ms = T0 + 999;
        s.client_put(&replaced).await.unwrap();
        let got = s.client_get("app").await.unwrap().unwrap();
        assert_eq!(got, ClientRow { created_ms: T0, ..replaced.clone() }, "replacing keeps the registration time");
        let ids: Vec<String> = s.clients_list().await.unwrap().into_iter().map(|c| c.client_id).collect();
        assert_eq!(ids, ["another", "app"]);
        assert!(!s.client_remove("none", T0).await.unwrap());
    }
}

#[tokio::test]
async fn a_disabled_or_removed_client_has_no_working_tokens() {
    for s in common::stores().await {
        world(&s).await;
        let mut app = client("app");
        app.disabled = true;
        s.client_put(&app).await.unwrap();
        assert!(s.access_lookup("at1", T0 + 1).await.unwrap().is_none());
        assert_eq!(s.refresh_rotate("rt1", "rt2", T0 + 1, T0 + HOUR, 1000).await.unwrap(), Rotated::Invalid);
        app.disabled = false;
        s.client_put(&app).await.unwrap();
        assert!(s.access_lookup("at1", T0 + 2).await.unwrap().is_some());
        // An unredeemed code of the client, and an authorization request.
        s.code_put(&code("c1", "g-code", "app"), &grant("g-code", Some("u1"), "app", None)).await.unwrap();
        assert!(s.client_remove("app", T0 + 3).await.unwrap());
        assert_eq!(s.client_get("app").await.unwrap(), None);
        assert!(s.access_lookup("at1", T0 + 4).await.unwrap().is_none());
        assert_eq!(revoked_reason(&s, "g1").await.as_deref(), Some("client-removed"));
        assert_eq!(s.code_redeem("c1", T0 + 4).await.unwrap(), Redeemed::Invalid);
        assert_eq!(s.refresh_rotate("rt1", "rt2", T0 + 4, T0 + HOUR, 1000).await.unwrap(), Rotated::Invalid);
        // Registering the id again does not bring the old grants back.
        s.client_put(&client("app")).await.unwrap();
        assert!(s.access_lookup("at1", T0 + 5).await.unwrap().is_none());
        assert!(!s.client_remove("app-that-never-was", T0).await.unwrap());
    }
}

#[tokio::test]
async fn devices_are_one_per_user_client_and_agent() {
    for s in common::stores().await {
        s.user_create(&user("u1", "alice")).await.unwrap();
        let a = s.device_touch("u1", "portal", "Firefox", T0).await.unwrap();
        let again = s.device_touch("u1", "portal", "Firefox", T0 + 100).await.unwrap();
        assert_eq!(a, again);
        let older = s.device_touch("u1", "portal", "Firefox", T0 + 50).await.unwrap();
        assert_eq!(a, older);
        let b = s.device_touch("u1", "app", "Firefox", T0 + 200).await.unwrap();
        let c = s.device_touch("u1", "portal", "Safari", T0 + 300).await.unwrap();
        let other_user = s.device_touch("u2", "portal", "Firefox", T0).await.unwrap();
        assert_eq!([&a, &b, &c, &other_user].iter().collect::<std::collections::HashSet<_>>().len(), 4);
        let list = s.devices_list("u1").await.unwrap();
        assert_eq!(list.iter().map(|d| d.id.clone()).collect::<Vec<_>>(), [c.clone(), b.clone(), a.clone()]);
        let first = &list[2];
        assert_eq!((first.first_seen_ms, first.last_seen_ms), (T0, T0 + 100), "last seen never goes back");
        assert_eq!(
            (first.user_id.as_str(), first.client_id.as_str(), first.user_agent.as_str()),
            ("u1", "portal", "Firefox")
        );
        assert_eq!((first.revoked_ms, first.wipe), (None, false));
        // A user agent too long for an index entry is kept shortened.
        let long = "é".repeat(2000);
        let d = s.device_touch("u1", "portal", &long, T0).await.unwrap();
        assert_eq!(d, s.device_touch("u1", "portal", &long, T0 + 1).await.unwrap());
        let stored = s.devices_list("u1").await.unwrap().into_iter().find(|x| x.id == d).unwrap().user_agent;
        assert!(stored.len() <= 512 && long.starts_with(&stored), "{}", stored.len());
    }
}

#[tokio::test]
async fn concurrent_first_visits_share_one_device() {
    for s in common::stores().await {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move { s.device_touch("u1", "portal", "Firefox", T0 + i).await.unwrap() })
            })
            .collect();
        let mut ids = std::collections::HashSet::new();
        for t in tasks {
            ids.insert(t.await.unwrap());
        }
        assert_eq!(ids.len(), 1);
        assert_eq!(s.devices_list("u1").await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn revoking_a_device_ends_its_sessions_and_grants_and_marks_it_for_wipe() {
    for s in common::stores().await {
        let device = world(&s).await;
        // A second device keeps working.
        let other = s.device_touch("u1", "portal", "Safari", T0).await.unwrap();
        s.session_create(&session("s-other", "u1", &other, T0)).await.unwrap();
        assert!(!s.device_revoke("u2", &device, T0 + 1).await.unwrap(), "not the user's device");
        assert!(!s.device_revoke("u1", "no-such-device", T0 + 1).await.unwrap());
        assert!(s.access_lookup("at1", T0 + 1).await.unwrap().is_some());
        assert!(s.device_revoke("u1", &device, T0 + 2).await.unwrap());
        assert!(s.access_lookup("at1", T0 + 3).await.unwrap().is_none());
        assert!(s.session_get("s1", T0 + 3, HOUR, 12 * HOUR).await.unwrap().is_none());
        assert_eq!(revoked_reason(&s, "g1").await.as_deref(), Some("device-revoked"));
        let d = s.devices_list("u1").await.unwrap().into_iter().find(|d| d.id == device).unwrap();
        assert_eq!((d.revoked_ms, d.wipe), (Some(T0 + 2), true));
        assert!(s.session_get("s-other", T0 + 3, HOUR, 12 * HOUR).await.unwrap().is_some());
        // Revoking again keeps the first time; the next visit gets a new device.
        assert!(s.device_revoke("u1", &device, T0 + 9).await.unwrap());
        let d = s.devices_list("u1").await.unwrap().into_iter().find(|d| d.id == device).unwrap();
        assert_eq!(d.revoked_ms, Some(T0 + 2));
        let fresh = s.device_touch("u1", "app", "Firefox", T0 + 10).await.unwrap();
        assert_ne!(fresh, device);
    }
}

#[tokio::test]
async fn a_grant_on_a_revoked_device_is_refused_even_if_not_itself_revoked() {
    for s in common::stores().await {
        let device = world(&s).await;
        s.device_revoke("u1", &device, T0 + 1).await.unwrap();
        // A grant that names the device but was stored after the revocation.
        s.grant_create(&grant("g-late", Some("u1"), "app", Some(&device))).await.unwrap();
        s.access_put("at-late", "g-late", T0 + HOUR).await.unwrap();
        assert!(s.access_lookup("at-late", T0 + 2).await.unwrap().is_none());
        // And one naming a device that does not exist.
        s.grant_create(&grant("g-ghost", Some("u1"), "app", Some("ghost"))).await.unwrap();
        s.access_put("at-ghost", "g-ghost", T0 + HOUR).await.unwrap();
        assert!(s.access_lookup("at-ghost", T0 + 2).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn sessions_expire_when_idle_or_old_and_advance_when_used() {
    for s in common::stores().await {
        let device = world(&s).await;
        let idle = 10 * 60_000;
        let absolute = 8 * HOUR;
        let got = s.session_get("s1", T0 + 1000, idle, absolute).await.unwrap().unwrap();
        assert_eq!(got, SessionRow { last_seen_ms: T0 + 1000, ..session("s1", "u1", &device, T0) });
        // Exactly at the idle limit is still live (and moves the window).
        let t = T0 + 1000 + idle;
        assert_eq!(s.session_get("s1", t, idle, absolute).await.unwrap().unwrap().last_seen_ms, t);
        // A lookup with an older clock does not move last_seen back.
        assert_eq!(s.session_get("s1", t - 5, idle, absolute).await.unwrap().unwrap().last_seen_ms, t);
        assert!(s.session_get("s1", t + idle + 1, idle, absolute).await.unwrap().is_none(), "idle");
        // Used often, it still ends at the absolute limit.
        s.session_create(&session("s2", "u1", &device, T0)).await.unwrap();
        let mut now = T0;
        while now + idle / 2 <= T0 + absolute {
            now += idle / 2;
            assert!(s.session_get("s2", now, idle, absolute).await.unwrap().is_some(), "{}", now - T0);
        }
        assert!(s.session_get("s2", T0 + absolute + 1, idle, absolute).await.unwrap().is_none(), "absolute");
        assert!(s.session_get("unknown", T0, idle, absolute).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn session_stepup_acting_for_and_revocation() {
    for s in common::stores().await {
        world(&s).await;
        s.session_set_stepup("s1", T0 + 5).await.unwrap();
        s.session_set_acting_for("s1", Some("kid")).await.unwrap();
        let got = s.session_get("s1", T0 + 6, HOUR, 12 * HOUR).await.unwrap().unwrap();
        assert_eq!((got.stepup_ms, got.acting_for.as_deref()), (Some(T0 + 5), Some("kid")));
        s.session_set_acting_for("s1", None).await.unwrap();
        assert_eq!(s.session_get("s1", T0 + 7, HOUR, 12 * HOUR).await.unwrap().unwrap().acting_for, None);
        s.session_revoke("s1").await.unwrap();
        assert!(s.session_get("s1", T0 + 8, HOUR, 12 * HOUR).await.unwrap().is_none());
        // A session whose device belongs to someone else is not live.
        let theirs = s.device_touch("u2", "portal", "Firefox", T0).await.unwrap();
        s.session_create(&session("s-mixed", "u1", &theirs, T0)).await.unwrap();
        assert!(s.session_get("s-mixed", T0 + 1, HOUR, 12 * HOUR).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn authorization_requests_live_until_they_expire() {
    for s in common::stores().await {
        let req = AuthRequestRow {
            id: "req-1".into(),
            client_id: "app".into(),
            redirect_uri: "https://app.example/cb".into(),
            scope: "openid patient/*.rs".into(),
            state: Some("xyz".into()),
            code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
            nonce: None,
            launch_patient: Some("p1".into()),
            created_ms: T0,
            expires_ms: T0 + 600_000,
        };
        s.auth_request_put(&req).await.unwrap();
        assert_eq!(s.auth_request_get("req-1", T0 + 1).await.unwrap(), Some(req.clone()));
        assert_eq!(s.auth_request_get("req-1", T0 + 600_000).await.unwrap(), None, "expired");
        assert_eq!(s.auth_request_get("req-2", T0).await.unwrap(), None);
        s.auth_request_delete("req-1").await.unwrap();
        assert_eq!(s.auth_request_get("req-1", T0 + 1).await.unwrap(), None);
        // Expired requests are forgotten when new ones arrive.
        s.auth_request_put(&req).await.unwrap();
        let later = AuthRequestRow { id: "req-3".into(), created_ms: T0 + 700_000, expires_ms: T0 + 1_300_000, ..req };
        s.auth_request_put(&later).await.unwrap();
        assert_eq!(s.auth_request_get("req-1", T0).await.unwrap(), None);
        assert!(s.auth_request_get("req-3", T0 + 700_001).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn a_code_activates_its_grant_once_and_a_replay_revokes_it() {
    for s in common::stores().await {
        world(&s).await;
        let g = grant("g-code", Some("u1"), "app", None);
        let c = code("c1", "g-code", "app");
        s.code_put(&c, &g).await.unwrap();
        // Until redeemed, the grant is pending: none of its tokens work and it is not listed.
        s.access_put("at-early", "g-code", T0 + HOUR).await.unwrap();
        s.refresh_put("rt-early", "g-code", T0, T0 + HOUR).await.unwrap();
        assert!(s.access_lookup("at-early", T0 + 1).await.unwrap().is_none());
        assert_eq!(s.refresh_rotate("rt-early", "x", T0 + 1, T0 + HOUR, 0).await.unwrap(), Rotated::Invalid);
        assert_eq!(s.grants_for_user("u1").await.unwrap().iter().map(|g| g.id.as_str()).collect::<Vec<_>>(), ["g1"]);
        assert_eq!(s.grant_get("g-code").await.unwrap(), Some(g.clone()));

        assert_eq!(s.code_redeem("c1", T0 + 2).await.unwrap(), Redeemed::Fresh(c.clone()));
        let auth = s.access_lookup("at-early", T0 + 3).await.unwrap().unwrap();
        assert_eq!(auth.grant, g);
        assert_eq!(s.grants_for_user("u1").await.unwrap().len(), 2);

        assert_eq!(s.code_redeem("c1", T0 + 4).await.unwrap(), Redeemed::Replayed);
        assert_eq!(revoked_reason(&s, "g-code").await.as_deref(), Some("code-replay"));
        assert!(s.access_lookup("at-early", T0 + 5).await.unwrap().is_none());
        // Replays keep being refused (and the first revocation stands).
        assert_eq!(s.code_redeem("c1", T0 + 6).await.unwrap(), Redeemed::Replayed);
        assert_eq!(s.grant_get("g-code").await.unwrap().unwrap().revoked_ms, Some(T0 + 4));
        // The user's other grant is untouched.
        assert!(s.access_lookup("at1", T0 + 7).await.unwrap().is_some());

        assert_eq!(s.code_redeem("unknown", T0).await.unwrap(), Redeemed::Invalid);
        s.code_put(&code("c2", "g-c2", "app"), &grant("g-c2", Some("u1"), "app", None)).await.unwrap();
        assert_eq!(s.code_redeem("c2", T0 + 60_000).await.unwrap(), Redeemed::Invalid, "expired");
        assert!(s.grant_get("g-c2").await.unwrap().unwrap().revoked_ms.is_none());
        // A code whose grant was revoked before redemption is invalid.
        s.code_put(&code("c3", "g-c3", "app"), &grant("g-c3", Some("u1"), "app", None)).await.unwrap();
        assert!(s.grant_revoke("g-c3", "user-denied", T0 + 1).await.unwrap());
        assert_eq!(s.code_redeem("c3", T0 + 2).await.unwrap(), Redeemed::Invalid);

        let mismatched = s.code_put(&code("c4", "g-other", "app"), &grant("g-c4", None, "app", None)).await;
        assert!(matches!(mismatched, Err(StoreError::BadQuery(_))), "{mismatched:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redemptions_of_one_code_yield_exactly_one_fresh() {
    for s in common::stores().await {
        world(&s).await;
        for round in 0..10 {
            let (cid, gid) = (format!("c-{round}"), format!("g-{round}"));
            s.code_put(&code(&cid, &gid, "app"), &grant(&gid, Some("u1"), "app", None)).await.unwrap();
            let tasks: Vec<_> = (0..6)
                .map(|_| {
                    let (s, cid) = (s.clone(), cid.clone());
                    tokio::spawn(async move { s.code_redeem(&cid, T0 + 10).await.unwrap() })
                })
                .collect();
            let mut fresh = 0;
            for t in tasks {
                match t.await.unwrap() {
                    Redeemed::Fresh(c) => {
                        assert_eq!(c.grant_id, gid);
                        fresh += 1;
                    }
                    Redeemed::Replayed => {}
                    Redeemed::Invalid => panic!("a live code was called invalid"),
                }
            }
            assert_eq!(fresh, 1, "round {round}");
            // The racing redemptions were replays: the grant is revoked, never half-active.
            assert_eq!(revoked_reason(&s, &gid).await.as_deref(), Some("code-replay"));
        }
    }
}

#[tokio::test]
async fn grants_are_created_listed_and_revoked() {
    for s in common::stores().await {
        s.user_create(&user("u1", "alice")).await.unwrap();
        s.client_put(&client("app")).await.unwrap();
        s.client_put(&client("backend")).await.unwrap();
        let mut g1 = grant("g1", Some("u1"), "app", None);
        g1.stepup_ms = Some(T0 - 5);
        s.grant_create(&g1).await.unwrap();
        let mut g2 = grant("g2", Some("u1"), "app", None);
        g2.created_ms = T0 + 10;
        s.grant_create(&g2).await.unwrap();
        s.grant_create(&grant("g3", Some("u2"), "app", None)).await.unwrap();
        assert_eq!(s.grant_get("g1").await.unwrap(), Some(g1.clone()));
        assert_eq!(s.grant_get("nope").await.unwrap(), None);
        assert_eq!(s.grants_for_user("u1").await.unwrap(), [g2.clone(), g1.clone()]);
        assert!(s.grant_revoke("g2", "user-revoked", T0 + 20).await.unwrap());
        assert!(!s.grant_revoke("g2", "again", T0 + 30).await.unwrap(), "already revoked");
        assert!(!s.grant_revoke("nope", "x", T0).await.unwrap());
        let revoked = s.grant_get("g2").await.unwrap().unwrap();
        assert_eq!((revoked.revoked_ms, revoked.revoked_reason.as_deref()), (Some(T0 + 20), Some("user-revoked")));
        assert_eq!(s.grants_for_user("u1").await.unwrap(), [g1]);

        // A backend service's grant has no user.
        let svc = grant("g-svc", None, "backend", None);
        s.grant_create(&svc).await.unwrap();
        s.access_put("at-svc", "g-svc", T0 + HOUR).await.unwrap();
        let auth = s.access_lookup("at-svc", T0).await.unwrap().unwrap();
        assert_eq!((auth.grant, auth.user, auth.expires_ms), (svc, None, T0 + HOUR));
    }
}

#[tokio::test]
async fn access_tokens_work_until_expiry_revocation_or_deletion() {
    for s in common::stores().await {
        world(&s).await;
        let auth = s.access_lookup("at1", T0 + HOUR - 1).await.unwrap().unwrap();
        assert_eq!(auth.user, s.user_by_id("u1").await.unwrap());
        assert_eq!(auth.grant.id, "g1");
        assert_eq!(auth.expires_ms, T0 + HOUR);
        assert!(s.access_lookup("at1", T0 + HOUR).await.unwrap().is_none(), "expired");
        assert!(s.access_lookup("unknown", T0).await.unwrap().is_none());
        s.access_put("at2", "g1", T0 + HOUR).await.unwrap();
        s.access_delete("at2").await.unwrap();
        assert!(s.access_lookup("at2", T0).await.unwrap().is_none());
        assert!(s.access_lookup("at1", T0).await.unwrap().is_some());
        s.grant_revoke("g1", "user-revoked", T0 + 1).await.unwrap();
        assert!(s.access_lookup("at1", T0 + 2).await.unwrap().is_none());
        // A grant whose user row is gone is refused, not treated as a backend service.
        s.client_put(&client("app2")).await.unwrap();
        s.grant_create(&grant("g-orphan", Some("ghost"), "app2", None)).await.unwrap();
        s.access_put("at-orphan", "g-orphan", T0 + HOUR).await.unwrap();
        assert!(s.access_lookup("at-orphan", T0).await.unwrap().is_none());
        // So is one whose client was never registered.
        s.grant_create(&grant("g-unreg", Some("u1"), "unregistered", None)).await.unwrap();
        s.access_put("at-unreg", "g-unreg", T0 + HOUR).await.unwrap();
        assert!(s.access_lookup("at-unreg", T0).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn refresh_tokens_rotate_once_and_reuse_revokes_the_family() {
    for s in common::stores().await {
        world(&s).await;
        let grace = 30_000;
        assert_eq!(
            s.refresh_grant("rt1").await.unwrap().map(|(g, exp, used)| (g.id, exp, used)),
            Some(("g1".into(), T0 + 24 * HOUR, false))
        );
        let Rotated::Rotated(g) = s.refresh_rotate("rt1", "rt2", T0 + 100, T0 + 48 * HOUR, grace).await.unwrap() else {
            panic!("not rotated")
        };
        assert_eq!(g.id, "g1");
        assert_eq!(s.refresh_grant("rt1").await.unwrap().map(|(_, _, used)| used), Some(true));
        assert_eq!(
            s.refresh_grant("rt2").await.unwrap().map(|(g, exp, used)| (g.id, exp, used)),
            Some(("g1".into(), T0 + 48 * HOUR, false))
        );
        // The old token again, within the grace period: refused, family kept.
        assert_eq!(
            s.refresh_rotate("rt1", "rt3", T0 + 100 + grace, T0 + HOUR, grace).await.unwrap(),
            Rotated::Concurrent
        );
        assert!(s.grant_get("g1").await.unwrap().unwrap().revoked_ms.is_none());
        assert!(s.refresh_grant("rt3").await.unwrap().is_none(), "nothing stored for a refused rotation");
        // The successor still works.
        assert!(matches!(
            s.refresh_rotate("rt2", "rt4", T0 + 200, T0 + HOUR, grace).await.unwrap(),
            Rotated::Rotated(_)
        ));
        // Later: reuse. The family (grant) is revoked, so the newest token dies too.
        assert_eq!(s.refresh_rotate("rt1", "rt5", T0 + 101 + grace, T0 + HOUR, grace).await.unwrap(), Rotated::Reused);
        assert_eq!(revoked_reason(&s, "g1").await.as_deref(), Some("refresh-reuse"));
        assert_eq!(s.refresh_rotate("rt4", "rt6", T0 + 300, T0 + HOUR, grace).await.unwrap(), Rotated::Invalid);
        assert!(s.access_lookup("at1", T0 + 300).await.unwrap().is_none());
        // Once the grant is revoked, presenting used tokens is merely invalid.
        assert_eq!(s.refresh_rotate("rt1", "rt7", T0 + 400 + grace, T0 + HOUR, grace).await.unwrap(), Rotated::Invalid);
        assert!(s.refresh_grant("rt4").await.unwrap().unwrap().0.revoked_ms.is_some());
        assert_eq!(s.refresh_rotate("unknown", "x", T0, T0 + HOUR, grace).await.unwrap(), Rotated::Invalid);
        assert!(s.refresh_grant("unknown").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn an_expired_refresh_token_does_not_rotate() {
    for s in common::stores().await {
        world(&s).await;
        assert_eq!(
            s.refresh_rotate("rt1", "rt2", T0 + 24 * HOUR, T0 + 48 * HOUR, 1000).await.unwrap(),
            Rotated::Invalid
        );
        assert!(s.grant_get("g1").await.unwrap().unwrap().revoked_ms.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rotations_of_one_refresh_token_rotate_once() {
    for s in common::stores().await {
        world(&s).await;
        let mut current = "rt1".to_string();
        for round in 0..10 {
            let tasks: Vec<_> = (0..6)
                .map(|i| {
                    let (s, old) = (s.clone(), current.clone());
                    tokio::spawn(async move {
                        let new = format!("rt-{round}-{i}");
                        (new.clone(), s.refresh_rotate(&old, &new, T0 + 10 + round, T0 + HOUR, 60_000).await.unwrap())
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for t in tasks {
                let (new, r) = t.await.unwrap();
                match r {
                    Rotated::Rotated(g) => {
                        assert_eq!(g.id, "g1");
                        winners.push(new);
                    }
                    Rotated::Concurrent => {}
                    other => panic!("round {round}: {other:?}"),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}");
            current = winners.remove(0);
        }
        assert!(s.grant_get("g1").await.unwrap().unwrap().revoked_ms.is_none());
        assert!(matches!(
            s.refresh_rotate(&current, "last", T0 + 100, T0 + HOUR, 0).await.unwrap(),
            Rotated::Rotated(_)
        ));
    }
}

#[tokio::test]
async fn jtis_are_claimed_once_per_client_until_they_expire() {
    for s in common::stores().await {
        assert!(s.jti_claim("app", "j1", T0 + 300_000, T0).await.unwrap());
        assert!(!s.jti_claim("app", "j1", T0 + 300_000, T0 + 1).await.unwrap(), "replay");
        assert!(s.jti_claim("other", "j1", T0 + 300_000, T0 + 1).await.unwrap(), "per client");
        assert!(s.jti_claim("app", "j2", T0 + 300_000, T0 + 2).await.unwrap());
        // Once expired it is forgotten (the assertion itself has expired by then).
        assert!(s.jti_claim("app", "j1", T0 + 900_000, T0 + 300_000).await.unwrap());
        assert!(!s.jti_claim("app", "j1", T0 + 900_000, T0 + 300_001).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_of_one_jti_succeed_once() {
    for s in common::stores().await {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move { s.jti_claim("app", "j", T0 + 300_000, T0 + i).await.unwrap() })
            })
            .collect();
        let mut won = 0;
        for t in tasks {
            won += usize::from(t.await.unwrap());
        }
        assert_eq!(won, 1);
    }
}
