// The JavaScript of the original Snorky README's PubSub page, unchanged
// but for the socket class and URL (WebSocket, or SockJS without it).
var args = socketArgs();
var snorky = new Snorky(args[0], args[1], {
  "pubsub": Snorky.PubSub
});
var pubsub = snorky.services.pubsub;

pubsub.subscribe({channel: 'messages'})
.then(function() {
  // Confirmation received! (optional)
  window.SUBSCRIBED = true;
});

pubsub.messagePublished.add(function(messageObject) {
  $('#messages').append(
    $('<li/>', {
    text: messageObject.message
  }));
});

$('form').on('submit', function(event) {
  event.preventDefault(); // don't reload the page

  pubsub.publish({
    channel: 'messages',
    message: $('#message').val()
  });
});
