package proxy_test

import (
	"slices"

	"github.com/sluice-gw/sluice/plugins"
	"github.com/sluice-gw/sluice/proxy"
)

// withStandIns returns the built-in plugins with the test's stand-ins in
// place of the built-ins of the same names.
func withStandIns(standIns ...*proxy.Factory) *proxy.Registry {
	all := slices.DeleteFunc(plugins.All(), func(f *proxy.Factory) bool {
		return slices.ContainsFunc(standIns, func(s *proxy.Factory) bool { return s.Name == f.Name })
	})
	return proxy.NewRegistry(append(all, standIns...)...)
}
