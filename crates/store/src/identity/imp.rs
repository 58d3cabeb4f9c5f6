//! [`IdentityStore`] for [`SqlStore`]: each method is carried out in the module of its
//! subject (users, clients, devices, sessions, oauth, tokens, jti).

use super::{
    AuthRequestRow, ClientRow, CodeRow, DeviceRow, GrantRow, IdentityStore, Redeemed, Rotated, SessionRow, TokenAuth,
    UserRow,
};
use crate::backend::SqlStore;
use crate::error::StoreError;
use async_trait::async_trait;

#[async_trait]
impl IdentityStore for SqlStore {
    async fn user_create(&self, user: &UserRow) -> Result<(), StoreError> {
        self.id_user_create(user).await
    }
    async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, StoreError> {
        self.id_user_by(false, id).await
    }
    async fn user_by_username(&self, username: &str) -> Result<Option<UserRow>, StoreError> {
        self.id_user_by(true, username).await
    }
    async fn users_list(&self) -> Result<Vec<UserRow>, StoreError> {
        self.id_users_list().await
    }
    async fn user_set_disabled(&self, id: &str, disabled: bool, now_ms: i64) -> Result<bool, StoreError> {
        self.id_user_set_disabled(id, disabled, now_ms).await
    }
    async fn user_set_password(
        &self,
        id: &str,
        password_hash: &str,
        keep_session: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.id_user_set_password(id, password_hash, keep_session, now_ms).await
    }
    async fn user_set_totp(&self, id: &str, secret: Option<&str>) -> Result<(), StoreError> {
        self.id_user_set_totp(id, secret).await
    }
    async fn user_login_failed(
        &self,
        id: &str,
        now_ms: i64,
        threshold: i64,
        lock_ms: i64,
    ) -> Result<Option<UserRow>, StoreError> {
        self.id_user_login_failed(id, now_ms, threshold, lock_ms).await
    }
    async fn user_login_succeeded(&self, id: &str) -> Result<(), StoreError> {
        self.id_user_login_succeeded(id).await
    }

    async fn client_put(&self, client: &ClientRow) -> Result<(), StoreError> {
        self.id_client_put(client).await
    }
    async fn client_get(&self, client_id: &str) -> Result<Option<ClientRow>, StoreError> {
        self.id_client_get(client_id).await
    }
    async fn clients_list(&self) -> Result<Vec<ClientRow>, StoreError> {
        self.id_clients_list().await
    }
    async fn client_remove(&self, client_id: &str, now_ms: i64) -> Result<bool, StoreError> {
        self.id_client_remove(client_id, now_ms).await
    }

    async fn device_touch(
        &self,
        user_id: &str,
        client_id: &str,
        user_agent: &str,
        now_ms: i64,
    ) -> Result<String, StoreError> {
        self.id_device_touch(user_id, client_id, user_agent, now_ms).await
    }
    async fn devices_list(&self, user_id: &str) -> Result<Vec<DeviceRow>, StoreError> {
        self.id_devices_list(user_id).await
    }
    async fn device_revoke(&self, user_id: &str, device_id: &str, now_ms: i64) -> Result<bool, StoreError> {
        self.id_device_revoke(user_id, device_id, now_ms).await
    }

    async fn session_create(&self, session: &SessionRow) -> Result<(), StoreError> {
        self.id_session_create(session).await
    }
    async fn session_get(
        &self,
        id_hash: &str,
        now_ms: i64,
        idle_ms: i64,
        absolute_ms: i64,
    ) -> Result<Option<SessionRow>, StoreError> {
        self.id_session_get(id_hash, now_ms, idle_ms, absolute_ms).await
    }
    async fn session_set_stepup(&self, id_hash: &str, at_ms: i64) -> Result<(), StoreError> {
        self.id_session_set_stepup(id_hash, at_ms).await
    }
    async fn session_set_acting_for(&self, id_hash: &str, patient: Option<&str>) -> Result<(), StoreError> {
        self.id_session_set_acting_for(id_hash, patient).await
    }
    async fn session_revoke(&self, id_hash: &str) -> Result<(), StoreError> {
        self.id_session_revoke(id_hash).await
    }

    async fn auth_request_put(&self, req: &AuthRequestRow) -> Result<(), StoreError> {
        self.id_auth_request_put(req).await
    }
    async fn auth_request_get(&self, id: &str, now_ms: i64) -> Result<Option<AuthRequestRow>, StoreError> {
        self.id_auth_request_get(id, now_ms).await
    }
    async fn auth_request_delete(&self, id: &str) -> Result<(), StoreError> {
        self.id_auth_request_delete(id).await
    }
    async fn code_put(&self, code: &CodeRow, grant: &GrantRow) -> Result<(), StoreError> {
        self.id_code_put(code, grant).await
    }
    async fn code_redeem(&self, code_hash: &str, now_ms: i64) -> Result<Redeemed, StoreError> {
        self.id_code_redeem(code_hash, now_ms).await
    }

    async fn grant_create(&self, grant: &GrantRow) -> Result<(), StoreError> {
        self.id_grant_create(grant).await
    }
    async fn grant_get(&self, id: &str) -> Result<Option<GrantRow>, StoreError> {
        self.id_grant_get(id).await
    }
    async fn grants_for_user(&self, user_id: &str) -> Result<Vec<GrantRow>, StoreError> {
        self.id_grants_for_user(user_id).await
    }
    async fn grant_revoke(&self, id: &str, reason: &str, now_ms: i64) -> Result<bool, StoreError> {
        self.id_grant_revoke(id, reason, now_ms).await
    }
    async fn access_put(&self, token_hash: &str, grant_id: &str, expires_ms: i64) -> Result<(), StoreError> {
        self.id_access_put(token_hash, grant_id, expires_ms).await
    }
    async fn access_lookup(&self, token_hash: &str, now_ms: i64) -> Result<Option<TokenAuth>, StoreError> {
        self.id_access_lookup(token_hash, now_ms).await
    }
    async fn refresh_put(
        &self,
        token_hash: &str,
        grant_id: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        self.id_refresh_put(token_hash, grant_id, now_ms, expires_ms).await
    }
    async fn refresh_rotate(
        &self,
        old_hash: &str,
        new_hash: &str,
        now_ms: i64,
        new_expires_ms: i64,
        grace_ms: i64,
    ) -> Result<Rotated, StoreError> {
        self.id_refresh_rotate(old_hash, new_hash, now_ms, new_expires_ms, grace_ms).await
    }
    async fn refresh_grant(&self, token_hash: &str) -> Result<Option<(GrantRow, i64, bool)>, StoreError> {
        self.id_refresh_grant(token_hash).await
    }
    async fn access_delete(&self, token_hash: &str) -> Result<(), StoreError> {
        self.id_access_delete(token_hash).await
    }

    async fn jti_claim(&self, client_id: &str, jti: &str, expires_ms: i64, now_ms: i64) -> Result<bool, StoreError> {
        self.id_jti_claim(client_id, jti, expires_ms, now_ms).await
    }
}
