package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/proxy/config"
)

func TestConsumersConfig(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, consumers, path, msg string
	}{
		{"valid", `{billing: {keys: ["billing-key-0123456789", "billing-key-rotated-99"]}, crm: {keys: ["crm-key-0123456789ab"]}}`, "", ""},
		{"no keys", `{billing: {keys: []}}`, "consumers.billing.keys", "at least one key"},
		{"short key", `{billing: {keys: ["short"]}}`, "consumers.billing.keys[0]", "at least 16"},
		{"empty key", `{billing: {keys: [""]}}`, "consumers.billing.keys[0]", "is empty"},
		{"key with space", `{billing: {keys: ["billing key 0123456789"]}}`, "consumers.billing.keys[0]", "spaces"},
		{"bad name", `{Billing: {keys: ["billing-key-0123456789"]}}`, "consumers.Billing", "invalid name"},
		{"reserved name", `{anonymous: {keys: ["billing-key-0123456789"]}}`, "consumers.anonymous", "reserved"},
		{"shared key", `{billing: {keys: ["same-key-0123456789ab"]}, crm: {keys: ["same-key-0123456789ab"]}}`, "consumers.crm.keys[0]", "consumers.billing.keys[0]"},
		{"unknown field", `{billing: {key: ["billing-key-0123456789"]}}`, "consumers.billing.key", "unknown key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			probs := testkit.ConfigProblems(t, minimal+"consumers: "+c.consumers+"\n")
			testkit.WantOneProblem(t, probs, c.path, c.msg)
			for _, p := range probs {
				if strings.Contains(p.Msg, "0123456789") {
					t.Errorf("a problem shows a key: %v", p)
				}
			}
		})
	}
}

func TestSecretFromFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "admin-token")
	testkit.WriteFile(t, file, "file-secret-value-1\n")
	doc := minimal + "admin: {token: \"file:" + file + "\"}\nconsumers: {billing: {keys: [\"file:" + file + "\"]}}\n"
	cfg, err := config.LoadBytes([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Admin.Token.Reveal(); got != "file-secret-value-1" {
		t.Fatalf("admin.token = %q, want the file's content without its newline", got)
	}
	if got := cfg.Consumers["billing"].Keys[0].Reveal(); got != "file-secret-value-1" {
		t.Fatalf("consumer key = %q", got)
	}
	if got := cfg.Redact(`{"x":"file-secret-value-1"}`); strings.Contains(got, "file-secret-value-1") || !strings.Contains(got, "file:"+file) {
		t.Errorf("Redact = %s, want the file's value replaced by its path", got)
	}

	// A reload reads the file again.
	testkit.WriteFile(t, file, "file-secret-value-2")
	cfg, err = config.LoadBytes([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Admin.Token.Reveal(); got != "file-secret-value-2" {
		t.Fatalf("after rotation admin.token = %q", got)
	}

	for _, c := range []struct{ value, msg string }{
		{"file:" + filepath.Join(dir, "missing"), "cannot read secret file"},
		{"file:relative/path", "absolute path"},
	} {
		probs := testkit.ConfigProblems(t, minimal+"admin: {token: \""+c.value+"\"}\n")
		testkit.WantOneProblem(t, probs, "admin.token", c.msg)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testkit.WantOneProblem(t, testkit.ConfigProblems(t, minimal+"admin: {token: \"file:"+empty+"\"}\n"), "admin.token", "is empty")
}
