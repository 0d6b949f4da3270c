"""The fault-injection suite's machinery: a cluster of real nodes on a real Redis behind
proxies, clients that check every delivery rule, and the record of what each fault cost."""
