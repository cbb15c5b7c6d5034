//! `GET /api/v1/keys`: the public keys that verify license tokens, as a JWK
//! Set, so any COSE library can check a token.

use poem::web::Data;
use poem_openapi::OpenApi;
use poem_openapi::payload::Json;

use crate::app::AppState;
use crate::http::ApiTags;
use crate::keys::JwkSet;

pub struct KeysApi;

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Keys")]
impl KeysApi {
    /// Public signing keys (JWK Set, RFC 7517 / RFC 8037).
    ///
    /// The `kid` of each key is the one carried in the protected header of
    /// the tokens it signs. The key signing now comes first; during a key
    /// rotation the set also holds the previous key (its tokens are still
    /// live) and the next one.
    #[oai(path = "/keys", method = "get", operation_id = "listKeys")]
    async fn keys(&self, state: Data<&AppState>) -> Json<JwkSet> {
        Json(JwkSet {
            keys: state.config.published_keys.clone(),
        })
    }
}
