//! A sprite's network policy.

use bothy_api::policy::NetworkPolicy;

use crate::{Client, Result};

impl Client {
    /// `GET /v1/sprites/{name}/policy/network`.
    pub async fn network_policy(&self, name: &str) -> Result<NetworkPolicy> {
        let url = self.url(&["v1", "sprites", name, "policy", "network"]);
        self.json(self.http.get(url)).await
    }

    /// `POST /v1/sprites/{name}/policy/network`: replaces the rules.
    pub async fn set_network_policy(&self, name: &str, policy: &NetworkPolicy) -> Result<()> {
        let url = self.url(&["v1", "sprites", name, "policy", "network"]);
        self.empty(self.http.post(url).json(policy)).await
    }
}
