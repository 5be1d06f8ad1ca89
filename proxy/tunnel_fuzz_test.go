package proxy

import (
	"strings"
	"testing"
)

// refUpgrades is the reference reading of an Upgrade value, by strings.Split.
func refUpgrades(v string) bool {
	for _, t := range strings.Split(v, ",") {
		t = strings.Trim(t, " \t")
		name, _, _ := strings.Cut(t, "/")
		if name != "" && !strings.EqualFold(name, "h2c") {
			return true
		}
	}
	return false
}

func refListHas(v, tok string) bool {
	for _, t := range strings.Split(v, ",") {
		if strings.EqualFold(strings.Trim(t, " \t"), tok) {
			return true
		}
	}
	return false
}

func TestUpgradeTokens(t *testing.T) {
	for _, c := range []struct {
		v    string
		want bool
	}{
		{"websocket", true}, {"WebSocket", true}, {"h2c", false}, {"H2C", false},
		{" h2c , ", false}, {"h2c, websocket", true}, {"h2c/1.0", false},
		{"TLS/1.2", true}, {"", false}, {",,", false}, {"/x", false},
	} {
		if got := upgradesBeyondH2C([]byte(c.v)); got != c.want {
			t.Errorf("upgradesBeyondH2C(%q) = %v, want %v", c.v, got, c.want)
		}
	}
	for _, c := range []struct {
		v    string
		want bool
	}{
		{"Upgrade", true}, {"keep-alive, upgrade", true}, {"Upgrade, HTTP2-Settings", true},
		{"upgrades", false}, {"close", false}, {"", false}, {"\tUPGRADE\t", true},
	} {
		if got := listHas([]byte(c.v), strUpgradeTok); got != c.want {
			t.Errorf("listHas(%q, upgrade) = %v, want %v", c.v, got, c.want)
		}
	}
}

// FuzzUpgradeTokens checks the Connection/Upgrade token readers against a
// plain strings.Split reading of the same value.
func FuzzUpgradeTokens(f *testing.F) {
	for _, s := range []string{"websocket", "h2c", "Upgrade, HTTP2-Settings", " h2c ,websocket/13", ",,", "\t/", "H2C/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if got, want := upgradesBeyondH2C([]byte(v)), refUpgrades(v); got != want {
			t.Fatalf("upgradesBeyondH2C(%q) = %v, reference %v", v, got, want)
		}
		if got, want := listHas([]byte(v), strUpgradeTok), refListHas(v, "upgrade"); got != want {
			t.Fatalf("listHas(%q) = %v, reference %v", v, got, want)
		}
	})
}
