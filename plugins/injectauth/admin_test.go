package injectauth_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
)

// TestAdminConfigShowsTheCredential: /admin/config shows each inject_auth
// block flat, as written: its type and that type's settings with their
// defaults, the overrides under consumers, every secret as [redacted].
func TestAdminConfigShowsTheCredential(t *testing.T) {
	gw := testkit.StartGateway(t, consumers+`
upstreams: {up: {url: "http://127.0.0.1:9"}}
routes:
  static:
    path: "/s/{p:*}"
    upstream: up
    plugins:
      inject_auth:
        type: bearer
        token: "admin-view-token-secret"
        consumers:
          billing: {keys: [admin-view-key-a, admin-view-key-b]}
          crm: {type: header, name: X-Crm-Key, value: "admin-view-crm-secret"}
  hmac: {path: "/h/{p:*}", upstream: up, plugins: {inject_auth: {type: hmac, secret: "admin-view-hmac-secret"}}}
  oauth:
    path: "/o/{p:*}"
    upstream: up
    plugins: {inject_auth: {type: oauth2_client_credentials, token_url: "http://127.0.0.1:9/t", client_id: app, client_secret: "admin-view-client-secret"}}
`)
	configs, body := gw.PluginConfigs(t)
	for _, secret := range []string{"admin-view-token-secret", "admin-view-key-a", "admin-view-key-b", "admin-view-crm-secret", "admin-view-hmac-secret", "admin-view-client-secret"} {
		if strings.Contains(string(body), secret) {
			t.Errorf("/admin/config shows %s", secret)
		}
	}
	for route, want := range map[string]map[string]any{
		"static": {
			"type": "bearer", "token": "[redacted]",
			"consumers": map[string]any{
				"billing": map[string]any{"type": "bearer", "keys": []any{"[redacted]", "[redacted]"}},
				"crm":     map[string]any{"type": "header", "name": "X-Crm-Key", "value": "[redacted]"},
			},
		},
		"hmac": {
			"type": "hmac", "secret": "[redacted]", "algorithm": "sha256", "encoding": "hex", "header": "X-Signature",
			"timestamp_header": "X-Timestamp", "sign": []any{"method", "path", "query", "timestamp", "body"},
		},
		"oauth": {
			"type": "oauth2_client_credentials", "token_url": "http://127.0.0.1:9/t", "client_id": "app",
			"client_secret": "[redacted]", "auth_style": "header", "refresh_before": "1m0s",
		},
	} {
		if got := configs[route]["inject_auth"]; !reflect.DeepEqual(got, want) {
			t.Errorf("%s: /admin/config shows inject_auth as\n%v\nwant\n%v", route, got, want)
		}
	}
}
