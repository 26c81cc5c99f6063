"""Time-slot bookings: providers' availability, holds, confirmation, and what follows."""
