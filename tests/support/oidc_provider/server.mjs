// An OpenID Connect provider for the sign-in tests: panva's oidc-provider (OpenID-certified),
// with its development login and consent pages. Any login is accepted with any password; its
// claims come from OIDC_TEST_ACCOUNTS. PKCE is required of every client, as a real provider may.
//
//   OIDC_TEST_PORT=9400 OIDC_TEST_CLIENTS='[{...}]' OIDC_TEST_ACCOUNTS='{"sub": {...}}' node server.mjs
import Provider from "oidc-provider";

const port = Number(process.env.OIDC_TEST_PORT);
const accounts = JSON.parse(process.env.OIDC_TEST_ACCOUNTS || "{}");

const provider = new Provider(`http://localhost:${port}`, {
  clients: JSON.parse(process.env.OIDC_TEST_CLIENTS),
  pkce: { required: () => true },
  scopes: ["openid", "profile", "email", "read-memberships"],
  // Hugging Face's `orgs` claim comes with its read-memberships scope.
  claims: {
    openid: ["sub"],
    profile: ["name", "preferred_username"],
    email: ["email", "email_verified"],
    "read-memberships": ["orgs"],
  },
  async findAccount(ctx, sub) {
    const claims = accounts[sub];
    return claims && { accountId: sub, claims: async () => ({ sub, ...claims }) };
  },
  cookies: { keys: ["tests-only-cookie-key"] },
  features: { devInteractions: { enabled: true } },
});
provider.listen(port, "127.0.0.1", () => console.log(`listening on ${port}`));
