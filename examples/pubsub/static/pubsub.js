// The PubSub page of the original Snorky README, on Snorky's own client
// (/snorky.js, served by the server). The README used jQuery; these few
// lines do the same with the DOM. The server is the one serving this page.
var snorky = new Snorky(WebSocket, "ws://" + location.host + "/websocket", {
  "pubsub": Snorky.PubSub
});
var pubsub = snorky.services.pubsub;

pubsub.subscribe({channel: 'messages'})
.then(function() {
  // Confirmation received! (optional)
  document.body.dataset.subscribed = "true";
});

pubsub.messagePublished.add(function(messageObject) {
  var li = document.createElement('li');
  li.textContent = messageObject.message;
  document.getElementById('messages').appendChild(li);
});

document.querySelector('form').addEventListener('submit', function(event) {
  event.preventDefault(); // don't reload the page

  pubsub.publish({
    channel: 'messages',
    message: document.getElementById('message').value
  });
});
