//! Provider keys bound to their credential (tenant, id, base URL) through the control plane's
//! public interface, on SQLite and PostgreSQL: ciphertexts of the tenant-only form are bound
//! once at start, a row repointed in the database no longer decrypts, and master-key rotation
//! keeps every row bound.
#![expect(clippy::unwrap_used)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use routero_control_plane::store::SealedCredential;
use routero_control_plane::{
    ControlPlane, ControlPlaneConfig, DEFAULT_TENANT, KeyringSource, Store, rotate_credentials,
};
use routero_crypto::{CryptoError, Keyring, SealingKey};
use secrecy::ExposeSecret;

const BASE_URL: &str = "http://127.0.0.1:9/v1";

/// A ciphertext as written before credentials were bound: the tenant alone as associated data.
fn legacy(key: &SealingKey, tenant: &str, plaintext: &str) -> String {
    let aad = [b"routero:credential:".as_slice(), tenant.as_bytes()].concat();
    let sealed = key.seal(&aad, plaintext.as_bytes()).unwrap();
    format!("v1:{}", STANDARD.encode(sealed))
}

/// Stores a credential `name` of `tenant` whose ciphertext is the legacy one of `sealed_for`.
async fn store_legacy(store: &Store, key: &SealingKey, tenant: &str, name: &str, sealed_for: &str) {
    store
        .create_credential(
            tenant,
            name,
            "openai",
            BASE_URL,
            |_| Ok(legacy(key, sealed_for, &format!("sk-{name}"))),
            Vec::new(),
        )
        .await
        .unwrap();
}

async fn row(store: &Store, name: &str) -> SealedCredential {
    store
        .load_state()
        .await
        .unwrap()
        .credentials
        .into_iter()
        .find(|c| c.credential.name == name)
        .unwrap()
}

/// Asserts that `name`'s secret is bound under `prefix` (`b<version>:`) and opens to
/// `sk-<name>`; returns the row.
async fn assert_bound(
    store: &Store,
    keyring: &Keyring,
    name: &str,
    prefix: &str,
) -> SealedCredential {
    let row = row(store, name).await;
    assert!(row.ciphertext.starts_with(prefix), "{}", row.ciphertext);
    let secret = keyring.decrypt(&row.binding(), &row.ciphertext).unwrap();
    assert_eq!(secret.expose_secret(), format!("sk-{name}"));
    row
}

async fn execute(url: &str, sql: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&pool)
        .await
        .unwrap();
}

async fn start(url: &str, keyring: &Keyring) {
    let config = ControlPlaneConfig::new(
        url.to_owned(),
        SealingKey::generate().unwrap(),
        KeyringSource::Fixed(keyring.clone()),
        SealingKey::generate().unwrap(),
    );
    ControlPlane::build(config).await.unwrap();
}

async fn legacy_rows_are_bound_once_and_stay_bound(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let tenant = store.ensure_tenant(DEFAULT_TENANT).await.unwrap();
    let key = SealingKey::generate().unwrap();
    let keyring = Keyring::new([(1, key.clone())]).unwrap();
    store_legacy(&store, &key, &tenant, "old", &tenant).await;
    // A legacy ciphertext of another tenant, moved here: it does not decrypt, so it is not bound.
    store_legacy(&store, &key, &tenant, "moved", "another-tenant").await;

    start(&url, &keyring).await;
    let old = assert_bound(&store, &keyring, "old", "b1:").await;
    let moved = row(&store, "moved").await;
    assert!(
        Keyring::is_legacy(&moved.ciphertext),
        "left as it was, out of snapshots"
    );
    assert_eq!(
        keyring
            .decrypt(&moved.binding(), &moved.ciphertext)
            .unwrap_err(),
        CryptoError::Legacy
    );
    execute(&url, "DELETE FROM credentials WHERE name = 'moved'").await;

    // A second start changes nothing.
    start(&url, &keyring).await;
    assert_eq!(row(&store, "old").await.ciphertext, old.ciphertext);

    // Repointed with the database's own credentials: the secret no longer decrypts, and a
    // rotation refuses to go on, naming the credential.
    execute(
        &url,
        "UPDATE credentials SET base_url = 'http://127.0.0.1:6666/v1' WHERE name = 'old'",
    )
    .await;
    let repointed = row(&store, "old").await;
    assert_eq!(
        keyring
            .decrypt(&repointed.binding(), &repointed.ciphertext)
            .unwrap_err(),
        CryptoError::Unauthentic
    );
    let rotated = keyring.with_new_version().unwrap();
    let refused = rotate_credentials(&store, &rotated).await.unwrap_err();
    assert!(
        refused.to_string().contains(&old.credential.id),
        "{refused}"
    );
    execute(
        &url,
        &format!("UPDATE credentials SET base_url = '{BASE_URL}' WHERE name = 'old'"),
    )
    .await;

    // Rotation moves the row to the new key, still bound.
    assert_eq!(rotate_credentials(&store, &rotated).await.unwrap(), 1);
    assert_bound(&store, &rotated, "old", "b2:").await;

    // A rotation also binds a legacy row it meets (a database no control plane has started on
    // since the upgrade).
    store_legacy(&store, &key, &tenant, "late", &tenant).await;
    assert_eq!(rotate_credentials(&store, &rotated).await.unwrap(), 1);
    assert_bound(&store, &rotated, "late", "b2:").await;
}

#[tokio::test]
async fn on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    legacy_rows_are_bound_once_and_stay_bound(routero_testkit::databases::sqlite_in(dir.path()))
        .await;
}

#[tokio::test]
async fn on_postgres() {
    let Some(url) = routero_testkit::databases::postgres_or_skip("credential_binding").await else {
        return;
    };
    legacy_rows_are_bound_once_and_stay_bound(url).await;
}
