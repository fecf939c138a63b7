//! Tokens: create, list, revoke.

use bothy_api::{CreateTokenRequest, CreateTokenResponse, TokenInfo, TokenList};

use crate::{Client, Result};

impl Client {
    /// `POST /v1/organizations/{org}/tokens`: the new token (shown only
    /// this once), its id and expiry.
    pub async fn create_token(
        &self,
        org: &str,
        req: &CreateTokenRequest,
    ) -> Result<CreateTokenResponse> {
        let url = self.url(&["v1", "organizations", org, "tokens"]);
        self.json(self.http.post(url).json(req)).await
    }

    /// `GET /v1/tokens[?org=ORG]`: the tokens this token may see (its
    /// organisation's; an admin's: every organisation's, or `org`'s).
    pub async fn list_tokens(&self, org: Option<&str>) -> Result<Vec<TokenInfo>> {
        let mut url = self.url(&["v1", "tokens"]);
        if let Some(o) = org {
            url.query_pairs_mut().append_pair("org", o);
        }
        let list: TokenList = self.json(self.http.get(url)).await?;
        Ok(list.tokens)
    }

    /// `DELETE /v1/tokens/{id}`: the token is refused from now on.
    pub async fn revoke_token(&self, id: &str) -> Result<()> {
        let url = self.url(&["v1", "tokens", id]);
        self.empty(self.http.delete(url)).await
    }
}
