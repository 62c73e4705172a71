package audit

// SetCheckers sets how many goroutines check signatures (0: GOMAXPROCS)
// and how many messages each takes at once, until the returned func.
func SetCheckers(n, batch int) (restore func()) {
	n0, b0 := checkers, batchSize
	checkers, batchSize = n, batch
	return func() { checkers, batchSize = n0, b0 }
}
