// Package relay joins the PubSub, Messaging and identity services of the
// nodes of a cluster through NATS, so that a client sees one service
// whichever node it is connected to. Each bridge is set on its service
// (pubsub.Bridge, messaging.Directory, identity.RevokeRemote) before the
// service is used, and stopped after the service's connections are gone.
//
// PubSub (PubSub) is interest-based: a node subscribes to the subject
// <prefix>.pubsub.<token> of a channel (token: the channel's canonical
// JSON in unpadded base64url, or a hash of it when long) while one of its
// connections holds the channel. A publish is delivered on its own node
// as on a single node, then published with the node's ID in a header;
// each other node with subscribers delivers it locally, and a node drops
// its own publishes when they come back. One goroutine publishes, from a
// bounded queue, and one delivers, from one channel every subscription
// feeds: a publisher's order holds on every node, and a NATS outage never
// blocks a publish (what cannot be queued is dropped, counted and
// logged). One more goroutine applies the changes of interest.
//
// Messaging (Messaging) keeps each name unique in a JetStream key-value
// bucket, snorky_<cluster name>_names: the key is the name in base64url,
// the value the owner node's ID. A claim is a Create; each node rewrites
// its names every NameRefresh (compare-and-set on the revision), and the
// bucket's TTL, NameTTL, frees the names of a node that died. A release
// deletes the key at the revision claimed. A message to a name another
// node owns is a request to <prefix>.msg.<owner node ID>, answered once
// queued; listParticipants reads the bucket's keys.
//
// disconnectIdentity (Identity) closes the identity's connections on this
// node, then asks every node on <prefix>.identity.revoke and gathers the
// counts: every node answers, this one too (with nothing), and the
// gathering ends GatherQuiet after the last answer or at Timeout. A node
// that answers later still closes its connections; only the count misses
// them.
package relay
