// Package window tracks event time per partition: the watermark that decides
// when a window is final and which records arrive too late. Window
// arithmetic itself (which windows a timestamp falls in) lives in abi, which
// the guest SDK shares.
package window
