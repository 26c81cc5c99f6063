"""The Socket.IO server: authentication on connect, rooms, client events."""
