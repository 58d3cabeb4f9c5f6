//! Creating users and changing their credentials.

use super::{AuthError, Identity, now_ms};
use portico_store::StoreError;
use portico_store::identity::{PatientLink, UserRow};

/// The roles a user can have.
pub const ROLES: [&str; 4] = ["patient", "caregiver", "clinician", "admin"];

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub role: String,
    pub display_name: String,
    /// `Patient/x`, `RelatedPerson/y`, `Practitioner/z`.
    pub fhir_user: Option<String>,
    pub links: Vec<PatientLink>,
    /// Base32 TOTP secret, when enrolled at creation (demo users).
    pub totp_secret: Option<String>,
}

/// Usernames are case-insensitive: stored lowercased, 1–64 of `[a-z0-9._@-]`.
pub fn normalise_username(raw: &str) -> Option<String> {
    let u = raw.trim().to_ascii_lowercase();
    let ok = !u.is_empty()
        && u.len() <= 64
        && u.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._@-".contains(&b));
    ok.then_some(u)
}

impl Identity {
    /// Create a user after checking the role, the links the role needs and the password
    /// policy. The password is hashed with Argon2id off the async runtime.
    pub async fn create_user(&self, new: NewUser) -> Result<UserRow, AuthError> {
        let username = normalise_username(&new.username).ok_or_else(|| {
            AuthError::InvalidRequest("A username is 1–64 characters of letters, digits and . _ @ -".into())
        })?;
        if !ROLES.contains(&new.role.as_str()) {
            return Err(AuthError::InvalidRequest(format!(
                "Unknown role '{}': use one of {}",
                new.role,
                ROLES.join(", ")
            )));
        }
        match new.role.as_str() {
            "patient" if new.links.len() != 1 => {
                return Err(AuthError::InvalidRequest("A patient user is linked to exactly one Patient.".into()));
            }
            "caregiver" if new.links.is_empty() => {
                return Err(AuthError::InvalidRequest("A caregiver is linked to at least one patient.".into()));
            }
            _ => {}
        }
        portico_identity::password::check_policy(&new.password).map_err(AuthError::InvalidRequest)?;
        let password_hash = self.hash_password(new.password).await?;
        let user = UserRow {
            id: uuid::Uuid::new_v4().to_string(),
            username,
            password_hash,
            role: new.role,
            display_name: new.display_name,
            fhir_user: new.fhir_user,
            links: new.links,
            totp_secret: new.totp_secret,
            disabled: false,
            failed_logins: 0,
            locked_until_ms: 0,
            created_ms: now_ms(),
        };
        match self.store.user_create(&user).await {
            Err(StoreError::Conflict) => Err(AuthError::InvalidRequest("That username is taken.".into())),
            other => other.map(|_| user).map_err(AuthError::from),
        }
    }

    /// Argon2id on a blocking thread (it is deliberately slow).
    pub async fn hash_password(&self, password: String) -> Result<String, AuthError> {
        let hasher = self.hasher.clone();
        tokio::task::spawn_blocking(move || hasher.hash(&password))
            .await
            .map_err(|e| AuthError::Internal(format!("password hashing failed: {e}")))
    }

    /// Change a password (the current one must be given): every other session and every
    /// grant of the user ends.
    pub async fn change_password(
        &self,
        user: &UserRow,
        current: String,
        new: String,
        keep_session: Option<&str>,
    ) -> Result<(), AuthError> {
        if !self.verify_password(user.password_hash.clone(), current).await {
            return Err(AuthError::AccessDenied("The current password is not right.".into()));
        }
        portico_identity::password::check_policy(&new).map_err(AuthError::InvalidRequest)?;
        let hash = self.hash_password(new).await?;
        self.store.user_set_password(&user.id, &hash, keep_session, now_ms()).await?;
        Ok(())
    }

    pub(crate) async fn verify_password(&self, phc: String, password: String) -> bool {
        let hasher = self.hasher.clone();
        tokio::task::spawn_blocking(move || hasher.verify(&password, &phc)).await.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::normalise_username;

    #[test]
    fn usernames_are_lowercased_and_checked() {
        assert_eq!(normalise_username(" Alice.Nguyen "), Some("alice.nguyen".into()));
        assert_eq!(normalise_username(""), None);
        assert_eq!(normalise_username("a b"), None);
        assert_eq!(normalise_username("<script>"), None);
    }
}
