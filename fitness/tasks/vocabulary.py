"""Hand-written word lists and fact tables the bundled tasks are generated from.

Kept apart from the generator so the data can be read (and checked) at a glance. Every entry is short:
the tasks must fit the character-level test models (contexts under ~60 characters), and every answer is
common knowledge for a small instruct model.
"""

from __future__ import annotations

WORDS: tuple[str, ...] = (
    "cat", "dog", "sun", "cup", "hat", "pen", "box", "map", "bus", "car", "egg", "fox", "owl", "pig",
    "bed", "key", "jam", "net", "ice", "toy", "bag", "fan", "arm", "leg", "ear", "eye", "sky", "sea",
    "red", "top", "book", "tree", "fish", "bird", "milk", "door", "lamp", "desk", "ship", "road", "rain",
    "snow", "wind", "fire", "gold", "salt", "cake", "corn", "rice", "moon", "star", "ring", "bell",
    "rose", "frog", "duck", "goat", "lion", "bear", "wolf", "hand", "foot", "nose", "king", "song",
    "game", "coat", "sock", "shoe", "boat", "farm", "park", "city", "hill", "lake", "apple", "bread",
    "chair", "table", "house", "horse", "mouse", "plant", "water", "light", "glass", "stone", "cloud",
    "river", "beach", "train", "clock", "phone", "paper", "music", "smile", "heart", "green", "brown",
    "white", "black", "sheep", "tiger", "zebra", "lemon", "grape", "peach", "honey", "sugar",
)

CAPITALS: tuple[tuple[str, str], ...] = (
    ("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"),
    ("Japan", "Tokyo"), ("China", "Beijing"), ("Russia", "Moscow"), ("Egypt", "Cairo"),
    ("England", "London"), ("Greece", "Athens"), ("Austria", "Vienna"), ("Ireland", "Dublin"),
    ("Portugal", "Lisbon"), ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"), ("Poland", "Warsaw"), ("Hungary", "Budapest"), ("Cuba", "Havana"),
    ("Peru", "Lima"), ("Kenya", "Nairobi"), ("Thailand", "Bangkok"), ("Iran", "Tehran"),
    ("Iraq", "Baghdad"), ("Canada", "Ottawa"), ("Mexico", "Mexico City"), ("Argentina", "Buenos Aires"),
    ("Belgium", "Brussels"), ("Turkey", "Ankara"), ("India", "New Delhi"), ("Australia", "Canberra"),
    ("South Korea", "Seoul"), ("Chile", "Santiago"), ("Colombia", "Bogota"), ("Ukraine", "Kyiv"),
)

OPPOSITES: tuple[tuple[str, str], ...] = (
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("happy", "sad"),
    ("old", "new"), ("day", "night"), ("black", "white"), ("open", "closed"), ("hard", "soft"),
    ("full", "empty"), ("early", "late"), ("rich", "poor"), ("light", "dark"), ("wet", "dry"),
    ("tall", "short"), ("left", "right"), ("in", "out"), ("good", "bad"), ("yes", "no"),
    ("win", "lose"), ("push", "pull"), ("buy", "sell"), ("true", "false"), ("first", "last"),
    ("strong", "weak"), ("loud", "quiet"), ("thick", "thin"), ("high", "low"), ("near", "far"),
    ("clean", "dirty"), ("alive", "dead"), ("love", "hate"), ("start", "end"),
)

DAYS: tuple[str, ...] = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

MONTHS: tuple[str, ...] = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)

NUMBER_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
)

PLURALS: tuple[tuple[str, str], ...] = (
    ("mouse", "mice"), ("child", "children"), ("man", "men"), ("woman", "women"), ("foot", "feet"),
    ("tooth", "teeth"), ("goose", "geese"), ("person", "people"), ("box", "boxes"), ("baby", "babies"),
    ("leaf", "leaves"), ("knife", "knives"), ("wolf", "wolves"), ("city", "cities"), ("bus", "buses"),
    ("fish", "fish"), ("sheep", "sheep"), ("ox", "oxen"), ("cat", "cats"), ("dog", "dogs"),
    ("glass", "glasses"), ("wife", "wives"), ("life", "lives"), ("party", "parties"), ("dish", "dishes"),
)

COLORS: tuple[tuple[str, str], ...] = (
    ("grass", "green"), ("the sky", "blue"), ("snow", "white"), ("coal", "black"), ("a banana", "yellow"),
    ("blood", "red"), ("an orange", "orange"), ("milk", "white"), ("a lemon", "yellow"), ("a tomato", "red"),
    ("the sea", "blue"), ("a leaf", "green"), ("chocolate", "brown"), ("the night sky", "black"),
)
