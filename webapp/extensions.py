"""Extensions, created unbound here and bound to an app by the factory. They are leaves: their modules import
nothing of the services or the views (the job queue is handed its runner by the factory)."""

from webapp.database import Database
from webapp.queue import JobQueue
from webapp.storage import ObjectStore
from webapp.throttle import SigninThrottle

db = Database()
store = ObjectStore()
queue = JobQueue()
signin_throttle = SigninThrottle()
