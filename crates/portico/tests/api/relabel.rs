//! `portico relabel` run as the binary: after the operator adds a rule to the
//! classification file, stored records carry the new sensitivity label (both backends).

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn relabel_applies_a_changed_classification_file_to_stored_records() {
    for app in TestApp::all().await {
        let id = app
            .create(json!({
                "resourceType": "Condition",
                "subject": {"reference": "Patient/p1"},
                "code": {"coding": [{"system": "urn:example:local-codes", "code": "X1"}]}
            }))
            .await;
        let before = app.state.store.read("Condition", &id).await.unwrap().expect("stored");
        assert!(!before.facts().labels.contains(&"BH".to_string()));

        let mut table: serde_json::Value =
            serde_json::from_str(include_str!("../../../fhir/data/classification.json")).unwrap();
        table["rules"]
            .as_array_mut()
            .unwrap()
            .insert(0, json!({"match": {"system": "urn:example:local-codes", "code": "X1"}, "labels": ["BH"]}));
        let rules = app.data_dir.join("rules.json");
        std::fs::write(&rules, table.to_string()).unwrap();

        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portico"));
        for (k, _) in std::env::vars() {
            if k.starts_with("PORTICO_") {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .arg("relabel")
            .env("PORTICO_DATA_DIR", &app.data_dir)
            .env("PORTICO_DATABASE_URL", &app.database_url)
            .env("PORTICO_CLASSIFICATION_FILE", &rules)
            .env("RUST_LOG", "error")
            .output()
            .expect("run portico relabel");
        let printed = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{printed}{}", String::from_utf8_lossy(&out.stderr));
        assert!(printed.contains("relabelled: 1 of"), "{printed}");
        let after = app.state.store.read("Condition", &id).await.unwrap().expect("stored");
        assert!(after.facts().labels.contains(&"BH".to_string()), "{:?}: {:?}", app.backend, after.facts().labels);
    }
}
