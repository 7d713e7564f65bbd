package keywardotel

// Holdings returns how many locks, permits and terms o keeps in its table of what this process holds.
func Holdings(o *Observer) int { return o.holdings.size() }
