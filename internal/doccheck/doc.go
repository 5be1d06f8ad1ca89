// Package doccheck holds the test that keeps the English and Korean user
// guides in step: every document has its counterpart, and every section of
// one exists in the other, at the same level and in the same order.
//
// An English section is known by its GitHub anchor (the slug of its heading).
// A Korean heading names the English section it translates with an anchor of
// the same id at its end, so that links with a fragment work in both:
//
//	## Rate limits                 (docs/plugins.md, anchor #rate-limits)
//	## 요청 한도 <a id="rate-limits"></a>   (docs/ko/plugins.md)
package doccheck
