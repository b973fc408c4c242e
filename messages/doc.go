// Package messages holds the protobuf messages of leaseagent: the record kept
// in the KV bucket for each lease, the events published when leases change
// hands, and the requests and replies of the agent's protocol.
//
// The Go code is generated from the .proto files beside it by `make proto`;
// do not edit the *.pb.go files by hand.
package messages
