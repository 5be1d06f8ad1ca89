package jsonpointer

import (
	"encoding/json"
	"testing"
)

func TestEvalRFC6901Examples(t *testing.T) {
	t.Parallel()
	// The example document and results of RFC 6901 section 5.
	var doc any
	if err := json.Unmarshal([]byte(`{"foo":["bar","baz"],"":0,"a/b":1,"c%d":2,"e^f":3,"g|h":4,"i\\j":5,"k\"l":6," ":7,"m~n":8}`), &doc); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		ptr  string
		want string
	}{
		{"", `{"":0," ":7,"a/b":1,"c%d":2,"e^f":3,"foo":["bar","baz"],"g|h":4,"i\\j":5,"k\"l":6,"m~n":8}`},
		{"/foo", `["bar","baz"]`},
		{"/foo/0", `"bar"`},
		{"/", `0`},
		{"/a~1b", `1`},
		{"/c%d", `2`},
		{"/e^f", `3`},
		{"/g|h", `4`},
		{"/i\\j", `5`},
		{"/k\"l", `6`},
		{"/ ", `7`},
		{"/m~0n", `8`},
	}
	for _, c := range cases {
		p, err := Parse(c.ptr)
		if err != nil {
			t.Fatalf("Parse(%q): %v", c.ptr, err)
		}
		v, ok := p.Eval(doc)
		if !ok {
			t.Fatalf("Eval(%q): not found", c.ptr)
		}
		got, _ := json.Marshal(v)
		if string(got) != c.want {
			t.Errorf("Eval(%q) = %s, want %s", c.ptr, got, c.want)
		}
	}
}

func TestEvalMissing(t *testing.T) {
	t.Parallel()
	var doc any
	_ = json.Unmarshal([]byte(`{"a":{"b":[1,2]},"s":"x"}`), &doc)
	for _, ptr := range []string{"/x", "/a/c", "/a/b/2", "/a/b/-1", "/a/b/01", "/a/b/x", "/s/0"} {
		p, err := Parse(ptr)
		if err != nil {
			t.Fatalf("Parse(%q): %v", ptr, err)
		}
		if v, ok := p.Eval(doc); ok {
			t.Errorf("Eval(%q) = %v, want not found", ptr, v)
		}
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	for _, ptr := range []string{"message", "/a~2", "/a~"} {
		if _, err := Parse(ptr); err == nil {
			t.Errorf("Parse(%q) succeeded, want error", ptr)
		}
	}
}
