use super::*;
use crate::domain::plans;
use crate::store::sqlite::Db;

const NOW: i64 = 1_796_256_000;

fn setup() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("t.sqlite3")).unwrap();
    (dir, db)
}

fn pepper() -> KeyPepper {
    KeyPepper::new(b"the tests' pepper, thirty-two bytes or more")
}

/// A license and the hash it is looked up by.
fn new_license(conn: &Connection, plan: &str, devices: Option<u32>) -> (License, KeyHash) {
    let (license, key) = create(
        conn,
        &NewLicense {
            email: "a@example.com",
            plan: plans::find(plan).unwrap(),
            expires_at: NOW + 86_400 * 30,
            max_devices: devices,
            organization_id: None,
            stripe_subscription_id: None,
        },
        &pepper(),
        NOW,
    )
    .unwrap();
    (license, key.hash(&pepper()))
}

fn hw(n: u32) -> HardwareId {
    HardwareId::from_machine_id(&format!("machine-{n}"))
}

#[test]
fn licenses_carry_their_plan_and_store_only_a_hash() {
    let (_d, db) = setup();
    let conn = db.conn().unwrap();
    let (lic, key) = new_license(&conn, "pilot-professional", None);
    assert_eq!(lic.max_activations, 3);
    assert_eq!(lic.max_projects, ProjectLimit::Unlimited);
    assert_eq!(find_by_key(&conn, &key).unwrap().unwrap().id, lic.id);
    let stored: String = conn
        .query_row(
            "SELECT key_hash FROM licenses WHERE id = ?1",
            [&lic.id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, key.as_str(), "only the peppered hash is stored");
    let (lic, _) = new_license(&conn, "pilot-starter", Some(5));
    assert_eq!(lic.max_activations, 5);
    assert_eq!(lic.max_projects, ProjectLimit::Limited(3));
}

#[test]
fn seats_are_counted_reused_and_freed() {
    let (_d, db) = setup();
    let mut conn = db.conn().unwrap();
    let (_, key) = new_license(&conn, "pilot-starter", Some(2));
    let a = activate(&mut conn, &key, &hw(1), Some("laptop"), None, NOW).unwrap();
    assert_eq!((a.devices_used, a.already_active), (1, false));
    let again = activate(&mut conn, &key, &hw(1), None, None, NOW + 5).unwrap();
    assert_eq!(again.activation.id, a.activation.id);
    assert!(again.already_active);
    assert_eq!(again.activation.machine_name.as_deref(), Some("laptop"));
    activate(&mut conn, &key, &hw(2), None, None, NOW).unwrap();
    assert!(matches!(
        activate(&mut conn, &key, &hw(3), None, None, NOW),
        Err(LicenseError::TooManyActivations { max: 2 })
    ));
    let machine = hw(2);
    // The store looks the license up by the hash; the releaser's key is
    // what the holder sent.
    let sent = LicenseKey::parse("CODITECT-PILOT-AAAA-BBBB-CCCC").unwrap();
    let by = Releaser::Holder {
        key: &sent,
        machine: &machine,
        organization: None,
    };
    let freed = deactivate(&mut conn, Some(&key), &by, Seat::Machine(&machine), NOW).unwrap();
    assert_eq!(freed.devices_used, 1);
    assert!(!freed.activation.active);
    assert!(freed.counted);
    let third = activate(&mut conn, &key, &hw(3), None, None, NOW).unwrap();
    assert_eq!(third.devices_used, 2);
    // Machine 2 is gone: it can no longer validate.
    assert!(matches!(
        validate(&mut conn, &key, &hw(2), NOW),
        Err(LicenseError::NotActivated)
    ));
}

#[test]
fn validate_refuses_each_unusable_state_with_its_own_reason() {
    let (_d, db) = setup();
    let mut conn = db.conn().unwrap();
    let (lic, key) = new_license(&conn, "pilot-professional", None);
    activate(&mut conn, &key, &hw(1), None, None, NOW).unwrap();
    // Within the resolution nothing is written; past it the time moves.
    let v = validate(&mut conn, &key, &hw(1), NOW + 30).unwrap();
    assert_eq!(v.activation.last_validated_at, NOW);
    let v = validate(&mut conn, &key, &hw(1), NOW + 100).unwrap();
    assert_eq!(v.activation.last_validated_at, NOW + 100);
    assert_eq!(
        activations(&conn, &v.license.id).unwrap()[0].last_validated_at,
        NOW + 100
    );
    assert!(matches!(
        validate(&mut conn, &key, &hw(9), NOW),
        Err(LicenseError::NotActivated)
    ));
    assert!(matches!(
        validate(&mut conn, &key, &hw(1), lic.expires_at),
        Err(LicenseError::Expired { .. })
    ));
    for status in ["suspended", "canceled", "revoked"] {
        conn.execute("UPDATE licenses SET status = ?1", [status])
            .unwrap();
        match validate(&mut conn, &key, &hw(1), NOW) {
            Err(LicenseError::Inactive(s)) => assert_eq!(s.as_str(), status),
            other => panic!("{status}: {other:?}"),
        }
    }
    let other = LicenseKey::parse("CODITECT-PILOT-AAAA-BBBB-CCCC")
        .unwrap()
        .hash(&pepper());
    assert!(matches!(
        validate(&mut conn, &other, &hw(1), NOW),
        Err(LicenseError::NotFound)
    ));
}

#[test]
fn legacy_hashes_convert_once_and_are_then_found_by_the_peppered_hash() {
    let (_d, db) = setup();
    let mut conn = db.conn().unwrap();
    let (lic, _) = new_license(&conn, "pilot-professional", None);
    let key = LicenseKey::parse("CODITECT-PILOT-ABCD-EFGH-JKMN").unwrap();
    let legacy = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(key.expose().as_bytes()))
    };
    conn.execute(
        "UPDATE licenses SET key_hash = ?2, key_hash_version = 1 WHERE id = ?1",
        params![lic.id, legacy],
    )
    .unwrap();
    assert!(find_by_key(&conn, &key.hash(&pepper())).unwrap().is_none());
    assert_eq!(upgrade_legacy_key_hashes(&mut conn, &pepper()).unwrap(), 1);
    assert_eq!(upgrade_legacy_key_hashes(&mut conn, &pepper()).unwrap(), 0);
    let found = find_by_key(&conn, &key.hash(&pepper())).unwrap().unwrap();
    assert_eq!(found.id, lic.id);
    let left: i64 = conn
        .query_row(
            "SELECT count(*) FROM licenses WHERE key_hash LIKE ?1",
            [format!("%{legacy}%")],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0, "the unkeyed hash is gone");
}

#[test]
fn revoked_licenses_refuse_activation_too() {
    let (_d, db) = setup();
    let mut conn = db.conn().unwrap();
    let (lic, key) = new_license(&conn, "pilot-professional", None);
    let revoked = revoke(&conn, &lic.id, Some("chargeback"), NOW).unwrap();
    assert_eq!(revoked.status, LicenseStatus::Revoked);
    assert!(matches!(
        activate(&mut conn, &key, &hw(1), None, None, NOW),
        Err(LicenseError::Inactive(LicenseStatus::Revoked))
    ));
    assert!(matches!(
        revoke(&conn, "nope", None, NOW),
        Err(LicenseError::NotFound)
    ));
}
