"""The evaluation cases, written by hand: the source `build.py` writes dpo_tasks/data/eval/<persona>.jsonl from.

Each case is a request a user of the persona would send, in one of four
categories, with the checklist the checklist judge reads:

    B  basic_alignment    a request squarely inside the persona
    S  constraint_stress  a request that pulls against the persona's rules (for a
                          persona with forbidden ingredients: it names one; the
                          answer must keep the diet and still serve the request)
    E  edge_case          a vague, tiny or odd request
    X  cross_persona      a dish from another persona's cuisine

`req` lists what of the request the answer must address: groups separated by
";", synonyms within a group by "," (the answer names at least one per group).
`forbid` lists words the answer must not use beyond the persona's own lists
(what the user ruled out: "no chili", "vegan"). `ing`/`steps`: the minimum
ingredient lines and numbered steps for a usable recipe; by default 4 and 3,
2 and 2 for edge cases (a tiny pantry makes a short recipe).

Cases are appended, never renumbered: an id names the same case for good.
"""

from __future__ import annotations

from typing import NamedTuple


class Case(NamedTuple):
    category: str
    prompt: str
    req: str
    forbid: tuple[str, ...] = ()
    ing: int | None = None
    steps: int | None = None


def B(prompt: str, req: str, forbid: tuple[str, ...] = (), ing: int | None = None, steps: int | None = None) -> Case:
    return Case("basic_alignment", prompt, req, forbid, ing, steps)


def S(prompt: str, req: str, forbid: tuple[str, ...] = (), ing: int | None = None, steps: int | None = None) -> Case:
    return Case("constraint_stress", prompt, req, forbid, ing, steps)


def E(prompt: str, req: str, forbid: tuple[str, ...] = (), ing: int | None = None, steps: int | None = None) -> Case:
    return Case("edge_case", prompt, req, forbid, ing, steps)


def X(prompt: str, req: str, forbid: tuple[str, ...] = (), ing: int | None = None, steps: int | None = None) -> Case:
    return Case("cross_persona", prompt, req, forbid, ing, steps)


DEFAULT_MINIMUMS = {"basic_alignment": (4, 3), "constraint_stress": (4, 3), "edge_case": (2, 2), "cross_persona": (4, 3)}

# What "no chili / mild / no heat" rules out for the Korean persona.
HEAT = ("gochujang", "gochugaru", "chili", "chilli", "chile", "chili flakes", "red pepper flakes", "jalapeno",
        "cayenne", "sriracha", "hot sauce")
# What "vegan" rules out in a request to a persona that is not vegan.
VEGAN = ("meat", "beef", "chicken", "pork", "bacon", "fish", "shrimp", "cheese", "butter", "cream", "milk", "egg",
         "eggs", "yogurt", "ghee", "honey", "lard")
# Substitutes a vegetarian answer to a meat or fish request would build on.
VEG_SUB = "paneer, tofu, jackfruit, mushroom, mushrooms, cauliflower, chickpeas, chickpea, potato, potatoes, soy chunks, soya, lentils, vegetables, kidney beans, banana"
# Gluten-free stand-ins for pasta, bread and flour.
GF_SUB = "gluten-free, rice flour, polenta, rice, zucchini, potato, potatoes, chickpea flour, almond flour, corn, buckwheat, quinoa"
# Plant stand-ins for meat, fish and cheese.
VEGAN_SUB = "jackfruit, mushroom, mushrooms, tofu, tempeh, seitan, soyrizo, black beans, beans, lentils, cauliflower, hearts of palm, walnuts, potato, cashew, nutritional yeast, vegan"
# Low-carb stand-ins for rice, noodles, wrappers and starch.
KETO_SUB = "cauliflower rice, shirataki, konjac, zucchini noodles, cabbage, lettuce, bean sprouts, daikon, almond flour, coconut flour, egg, eggs, xanthan"

CASES: dict[str, list[Case]] = {
    "persona_a_korean_spicy": [
        B("Make me a fiery kimchi jjigae with pork belly and tofu for a cold night.", "kimchi; pork; tofu"),
        B("I have gochujang, chicken drumsticks and potatoes. What spicy Korean braise can I cook?", "gochujang; chicken, drumsticks; potato, potatoes"),
        B("Spicy tteokbokki for two using rice cakes and whatever vegetables I have: cabbage and carrots.", "rice cake, rice cakes, tteok; cabbage; carrot, carrots"),
        B("A bold bibimbap bowl with spinach, bean sprouts, carrots and a fried egg.", "spinach; bean sprouts, sprouts; carrot, carrots; egg"),
        B("Quick spicy Korean stir-fried squid with onions and zucchini.", "squid; onion, onions; zucchini"),
        B("Give me a Korean soft tofu stew that really brings the heat.", "tofu; gochugaru, gochujang, chili, chilli, pepper"),
        B("I want a spicy cucumber side dish to go with grilled meat tonight.", "cucumber, cucumbers; gochugaru, gochujang, chili, chilli"),
        B("Kimchi fried rice with leftover rice, bacon and a couple of scallions.", "kimchi; rice; bacon; scallion, scallions, green onion, green onions"),
        S("Make a bland, mild chicken soup with no chili at all for my picky uncle.", "chicken; soup, broth", HEAT),
        S("A Korean japchae with no spice whatsoever and a sweet soy glaze only.", "glass noodles, sweet potato noodles, noodles, dangmyeon; soy", HEAT),
        S("Cook me a plain steamed fish with no garlic and no chili.", "fish, cod, sea bass, snapper; steam, steamed, steamer", HEAT + ("garlic",)),
        S("Write a mild, kid-friendly bulgogi recipe without gochujang or any heat.", "beef, bulgogi; soy, pear, marinade", HEAT),
        S("I want a cream-based mushroom soup, nothing spicy or fermented.", "mushroom, mushrooms; cream", HEAT + ("kimchi", "doenjang")),
        S("Non-spicy white kimchi only, I can't handle chili this week.", "napa cabbage, cabbage, radish; salt, brine", HEAT),
        E("I only have eggs and green onions. Something Korean?", "egg, eggs; green onion, green onions, scallion, scallions"),
        E("Something spicy. Surprise me.", "gochujang, gochugaru, chili, chilli, kimchi", ing=4, steps=3),
        E("Just a packet of instant noodles and a spoon of gochujang: make it better.", "noodles, ramen, ramyeon; gochujang"),
        E("Dinner? I have rice.", "rice"),
        X("Can you make me a Mexican bean burrito?", "burrito, tortilla, tortillas; bean, beans"),
        X("I'd like a classic Italian mushroom risotto.", "arborio, rice, risotto; mushroom, mushrooms"),
        # e021-e036 basic_alignment
        B("Spicy pork bulgogi (jeyuk bokkeum) with onions and lettuce wraps for four.", "pork; lettuce, wraps; gochujang, gochugaru"),
        B("Dakgalbi: spicy stir-fried chicken with cabbage, sweet potato and rice cakes.", "chicken; cabbage; sweet potato; rice cakes, rice cake, tteok"),
        B("A fiery seafood pancake (haemul pajeon) with scallions and a chili dipping sauce.", "scallion, scallions, green onion, green onions; squid, shrimp, seafood, clams, mussels; dipping sauce, sauce"),
        B("Buldak-style fire chicken for people who love extreme heat.", "chicken; gochugaru, gochujang, chili, chilli, pepper"),
        B("Yukgaejang, the spicy shredded beef soup with fernbrake and leeks.", "beef; leek, leeks, scallion, scallions, green onion; gochugaru, chili, chilli"),
        B("Kimchi pancakes that are crispy at the edges, for a rainy afternoon.", "kimchi; flour, batter", ing=3),
        B("Spicy braised tofu (dubu jorim) as a banchan for the week.", "tofu; gochugaru, gochujang, chili, chilli"),
        B("Maeuntang, a spicy fish stew with radish and tofu.", "fish, cod, pollock, snapper; radish, daikon; tofu"),
        B("Gochujang-glazed salmon on a sheet pan with broccoli.", "salmon; gochujang; broccoli"),
        B("A spicy Korean cold noodle bowl (bibim guksu) for a hot summer day.", "noodles, somyeon, guksu; gochujang, gochugaru, chili"),
        B("Stir-fried spicy baby octopus with onions and carrots.", "octopus; gochujang, gochugaru, chili; onion, onions, carrot, carrots"),
        B("Kimchi mandu: dumplings filled with pork, tofu and kimchi.", "kimchi; pork; tofu; dumpling, dumplings, mandu, wrappers"),
        B("Korean fried chicken wings with a sticky gochujang glaze.", "chicken, wings; gochujang; fry, fried"),
        B("Budae jjigae (army stew) with sausages, kimchi and ramen noodles.", "kimchi; sausage, sausages, spam, ham; ramen, noodles"),
        B("Spicy braised beef short ribs for a special dinner.", "short ribs, ribs, beef; gochugaru, gochujang, chili"),
        B("A Korean spicy eggplant side dish with garlic and sesame.", "eggplant, eggplants; garlic; sesame"),
        # e037-e048 constraint_stress
        S("My toddler can't eat anything spicy: a mild Korean rolled omelette (gyeran mari).", "egg, eggs; roll, rolled, omelette", HEAT),
        S("A gentle, non-spicy doenjang soup with zucchini for my grandmother after surgery.", "doenjang, soybean paste; zucchini", HEAT),
        S("Galbitang, the clear beef short rib soup, with no chili flakes at all.", "short rib, short ribs, ribs, beef; radish, broth", HEAT),
        S("Sweet soy-glazed potatoes (gamja jorim) as a banchan with zero heat.", "potato, potatoes; soy", HEAT),
        S("Soft steamed eggs (gyeran jjim) for someone with an upset stomach, nothing spicy please.", "egg, eggs; steam, steamed, steaming", HEAT),
        S("A non-spicy beef and radish soup (soegogi muguk) for a friend with a cold.", "beef; radish, daikon", HEAT),
        S("Korean barbecue marinade for guests who dislike fermented flavours: no kimchi and no doenjang.", "marinade, marinate; beef, pork, chicken, short ribs", ("kimchi", "doenjang", "gochujang")),
        S("A garlic-free spicy Korean pork stir-fry: my partner is allergic to garlic.", "pork; gochujang, gochugaru, chili", ("garlic",)),
        S("Sesame allergy at home: a Korean spinach side dish without sesame oil or sesame seeds.", "spinach", ("sesame", "sesame oil", "sesame seeds")),
        S("Vegetarian bibimbap with no egg and no meat, but still spicy.", "rice; gochujang, gochugaru, chili; spinach, carrot, carrots, mushrooms, bean sprouts, zucchini, tofu",
          ("egg", "eggs", "beef", "pork", "chicken", "meat", "bacon", "anchovy", "anchovies", "fish sauce")),
        S("Kid-friendly soy-braised chicken (jjimdak) with glass noodles and no chilies.", "chicken; glass noodles, noodles, dangmyeon; soy", HEAT),
        S("A pescatarian Korean dinner, no meat at all, and only mildly spicy.", "fish, shrimp, squid, seafood, clams, mussels, tofu, cod, mackerel",
          ("meat", "beef", "pork", "chicken", "bacon", "lamb", "spam", "sausage")),
        # e049-e056 edge_case
        E("Two eggs, a tin of tuna and some rice. Korean-ish?", "egg, eggs; tuna; rice", ing=3),
        E("I have half a cabbage and a jar of gochugaru.", "cabbage; gochugaru"),
        E("Ten minutes before the bus: spicy breakfast?", "minutes, minute, quick, fast"),
        E("All I have is a microwave and a mug. Spicy Korean something?", "microwave, mug"),
        E("Cooking for 20 people at a church picnic, Korean and spicy.", "20, twenty, serves, servings, crowd", ing=5, steps=3),
        E("Leftover fried chicken from last night. Make it Korean.", "chicken"),
        E("Only a bag of frozen dumplings and some spinach.", "dumpling, dumplings, mandu; spinach"),
        E("Can I make kimchi without a fermentation crock?", "kimchi; jar, container, bowl, crock", ing=4, steps=3),
        # e057-e060 cross_persona
        X("Chicken tikka masala, the Indian takeaway classic.", "chicken; masala, tomato, curry, yogurt"),
        X("A Japanese chicken teriyaki rice bowl.", "chicken; teriyaki, soy, glaze; rice"),
        X("Pad thai with tofu and peanuts.", "noodles, rice noodles; tofu; peanut, peanuts"),
        X("A French ratatouille for a summer dinner.", "eggplant, zucchini, courgette; tomato, tomatoes"),
    ],
    "persona_b_indian_veg": [
        B("A creamy palak paneer with fresh spinach for four.", "paneer; spinach, palak"),
        B("Tadka dal with yellow lentils, garlic and cumin for a weeknight.", "lentils, dal, toor, moong; garlic; cumin, jeera"),
        B("Chana masala with canned chickpeas that is ready in 30 minutes.", "chickpeas, chickpea, chana; tomato, tomatoes, onion"),
        B("Aloo gobi with cauliflower and potatoes, dry-style, for lunch boxes.", "cauliflower, gobi; potato, potatoes, aloo"),
        B("A vegetable biryani with basmati rice, saffron and mixed vegetables.", "basmati, rice; saffron; vegetables, carrot, carrots, peas, beans"),
        B("Masala dosa filling with potatoes, mustard seeds and curry leaves.", "potato, potatoes; mustard; curry leaves"),
        B("Malai kofta in a cashew tomato gravy for a festive dinner.", "kofta, dumplings, balls; cashew, cashews; tomato, tomatoes"),
        B("A cooling cucumber raita and a jeera rice to go with it.", "cucumber; yogurt, curd, dahi; rice; cumin, jeera"),
        S("Make me a butter chicken with naan for tonight.", f"{VEG_SUB}; tomato, makhani, butter; naan, flour, dough"),
        S("I want a Goan prawn curry with coconut and tamarind.", f"coconut; tamarind; {VEG_SUB}"),
        S("Lamb rogan josh for a dinner party, please.", f"{VEG_SUB}; kashmiri, chili, yogurt"),
        S("Fish tikka with yogurt marinade on the grill.", f"yogurt, curd; {VEG_SUB}; grill, grilled, skewers"),
        S("A keema matar with ground mutton and peas.", f"peas, matar; {VEG_SUB}"),
        S("Egg-free but with chicken stock: a mulligatawny soup.", "lentils, dal; vegetable stock, vegetable broth, water", ("egg", "eggs")),
        E("I only have lentils and salt.", "lentils, dal"),
        E("Something warm and comforting, you decide.", "", ing=4, steps=3),
        E("Leftover rice and one onion. Help.", "rice; onion"),
        E("What goes with chai?", "chai, tea"),
        X("Cook me a spicy Korean kimchi stew.", "kimchi; tofu, vegetables, mushrooms, zucchini, paneer"),
        X("A Japanese miso soup with tofu, please.", "miso; tofu"),
        # e021-e036 basic_alignment
        B("Paneer butter masala with a smooth tomato and cashew gravy.", "paneer; tomato, tomatoes; cashew, cashews, cream"),
        B("Rajma chawal: red kidney bean curry with steamed rice for Sunday lunch.", "kidney beans, rajma; rice"),
        B("Masoor dal with spinach and a garlic tadka.", "masoor, lentils, dal; spinach; garlic, tadka"),
        B("Vegetable korma with cauliflower, peas and carrots in a coconut sauce.", "cauliflower, peas, carrots, carrot; coconut, cashew"),
        B("Bhindi masala: dry-fried okra with onions and amchur.", "okra, bhindi; onion, onions"),
        B("Baingan bharta, smoky mashed eggplant, roasted over the gas flame.", "eggplant, aubergine, baingan; roast, roasted, char, charred, smoky, flame"),
        B("Sambar with toor dal, pumpkin and tamarind to go with idli.", "toor, dal, lentils; tamarind; pumpkin, vegetables"),
        B("Kadai paneer with bell peppers and a freshly ground kadai masala.", "paneer; pepper, peppers, capsicum"),
        B("Poha with peanuts, curry leaves and lemon for breakfast.", "poha, flattened rice; peanut, peanuts; curry leaves, lemon"),
        B("Aloo paratha stuffed with spiced potato, with yogurt on the side.", "potato, potatoes, aloo; flour, atta, dough"),
        B("Matar paneer for a family of five.", "paneer; peas, matar"),
        B("A Kerala-style vegetable stew with coconut milk to eat with appam.", "coconut; potato, potatoes, carrot, carrots, beans, vegetables"),
        B("Soft, spongy dhokla steamed from gram flour.", "gram flour, besan; steam, steamed, steamer"),
        B("Chole bhature for a weekend brunch.", "chickpeas, chickpea, chole, chana; bhature, dough, flour"),
        B("Gobi manchurian, the Indo-Chinese cauliflower starter.", "cauliflower, gobi; soy, sauce, garlic"),
        B("Mango lassi and a cumin-spiced corn chaat for a summer afternoon.", "mango; yogurt, curd, dahi; corn"),
        # e037-e048 constraint_stress
        S("Chicken biryani with saffron and fried onions for Eid.", f"rice; saffron; onion, onions; {VEG_SUB}"),
        S("Hyderabadi mutton haleem for Ramadan.", f"wheat, lentils, dal, oats; {VEG_SUB}"),
        S("Kerala fish molee with coconut milk and curry leaves.", f"coconut; {VEG_SUB}"),
        S("Tandoori chicken in the oven with a red yogurt marinade.", f"yogurt, curd; {VEG_SUB}; oven, bake, roast"),
        S("Chicken 65, the spicy Chennai starter.", f"curry leaves, chili, chilli; {VEG_SUB}"),
        S("Beef nihari slow-cooked overnight.", f"slow, simmer, simmered, overnight; {VEG_SUB}"),
        S("Chettinad crab curry with black pepper.", f"pepper; {VEG_SUB}"),
        S("Pork vindaloo, hot and tangy, for a curry night.", f"vinegar; chili, chilli, chilies, kashmiri; {VEG_SUB}"),
        S("Lamb seekh kebabs on skewers for the barbecue.", f"skewer, skewers, kebab, kebabs; {VEG_SUB}"),
        S("Chicken tikka sandwiches for a picnic.", f"bread, sandwich, sandwiches; {VEG_SUB}"),
        S("Amritsari fish fry in a gram flour batter.", f"besan, gram flour; {VEG_SUB}"),
        S("Shrimp pakoras with mint chutney for tea time.", f"pakora, pakoras, fritters, besan, batter; mint, chutney; {VEG_SUB}"),
        # e049-e056 edge_case
        E("Just yogurt, a cucumber and some cumin.", "yogurt, curd, dahi; cucumber; cumin, jeera", ing=3),
        E("I'm fasting for Navratri: no onion, no garlic, no grains. What can I eat?", "potato, potatoes, sabudana, buckwheat, kuttu, amaranth, makhana, singhara, sweet potato",
          ("onion", "onions", "garlic", "rice", "wheat", "atta"), ing=3),
        E("A tiffin lunch for a kid who hates vegetables.", "tiffin, lunch, lunchbox, box", ing=3),
        E("One pot, no oven, hostel kitchen, cheap.", "pot, pan", ing=3),
        E("Something Indian for my diabetic uncle, low in sugar.", "dal, lentils, vegetables, paneer, chana, chickpeas, millet, moong", ("sugar", "jaggery", "honey"), ing=3),
        E("Two potatoes and a packet of frozen peas.", "potato, potatoes, aloo; peas, matar"),
        E("How do I make fresh paneer at home from milk?", "milk; lemon, vinegar, curd, yogurt", ing=2, steps=3),
        E("Leftover rotis, what can I make?", "roti, rotis, chapati, chapatis", ing=3),
        # e057-e060 cross_persona
        X("A Mexican bean chili with cornbread.", "beans, bean; chili, chilli, cumin; corn, cornmeal, cornbread"),
        X("Italian eggplant parmigiana for a family dinner.", "eggplant, aubergine; tomato, tomatoes; mozzarella, parmesan, cheese"),
        X("A Chinese hot and sour soup.", "vinegar; pepper, chili, chilli; tofu, mushrooms, mushroom"),
        X("Thai green curry with vegetables.", "green curry, curry paste; coconut; vegetables, eggplant, beans, zucchini"),
    ],
    "persona_c_italian_gf": [
        B("A creamy mushroom risotto with arborio rice and parmesan.", "mushroom, mushrooms; arborio, rice; parmesan"),
        B("Soft polenta with a rustic tomato and sausage ragu.", "polenta; tomato, tomatoes; sausage"),
        B("Chicken cacciatore with peppers, olives and fresh herbs.", "chicken; pepper, peppers; olive, olives"),
        B("An eggplant parmigiana layered with mozzarella and basil.", "eggplant, aubergine; mozzarella; basil"),
        B("A Tuscan white bean and kale soup for a cold evening.", "bean, beans, cannellini; kale, cavolo nero"),
        B("Zucchini and ricotta frittata for a Sunday brunch.", "zucchini, courgette; ricotta; egg, eggs"),
        B("Osso buco with gremolata and saffron risotto.", "veal, shank, shanks, osso buco; gremolata, lemon, parsley; saffron, risotto"),
        B("A caprese salad and grilled chicken for a summer lunch.", "tomato, tomatoes; mozzarella; chicken"),
        S("Spaghetti carbonara with guanciale and pecorino, please.", f"guanciale, pancetta, bacon; pecorino, parmesan, cheese; egg, eggs, yolks; {GF_SUB}"),
        S("Homemade lasagna with beef ragu and bechamel.", f"beef, ragu; bechamel, white sauce, milk; {GF_SUB}, eggplant"),
        S("A garlic bread to serve with soup.", f"garlic; {GF_SUB}"),
        S("Potato gnocchi with brown butter and sage.", f"butter; sage; {GF_SUB}"),
        S("Chicken milanese coated in breadcrumbs and fried.", f"chicken; fry, fried, pan; {GF_SUB}, gluten-free breadcrumbs"),
        S("A margherita pizza on a thin crust made with regular flour.", f"tomato, tomatoes; mozzarella; {GF_SUB}"),
        E("I have tomatoes and olive oil. That's it.", "tomato, tomatoes; olive oil"),
        E("Something Italian for tonight.", "", ing=4, steps=3),
        E("Leftover cooked polenta, any ideas?", "polenta"),
        E("A quick snack before the game.", ""),
        X("Make me a vegan black bean taco.", "bean, beans; tortilla, tortillas, taco, tacos", VEGAN),
        X("A Chinese pork belly stir-fry with bok choy.", "pork; bok choy"),
        # e021-e036 basic_alignment
        B("Risotto alla milanese with saffron for a dinner party.", "saffron; risotto, arborio, carnaroli, rice"),
        B("Creamy polenta topped with wild mushrooms and thyme.", "polenta; mushroom, mushrooms; thyme"),
        B("Chicken piccata with lemon and capers, dredged in rice flour.", "chicken; lemon; caper, capers"),
        B("Saltimbocca with veal, sage and prosciutto.", "veal; sage; prosciutto, ham"),
        B("A Sicilian caponata with eggplant, celery and olives.", "eggplant, aubergine; celery; olive, olives, capers"),
        B("Minestrone with borlotti beans, cavolo nero and potatoes.", "borlotti, beans, bean; cavolo nero, kale, cabbage; potato, potatoes"),
        B("Seared scallops on a pea and mint puree.", "scallop, scallops; pea, peas; mint"),
        B("Beef braised in Barolo with carrots and celery.", "beef; barolo, wine; carrot, carrots, celery"),
        B("Stuffed bell peppers with rice, tomatoes and mozzarella.", "pepper, peppers; rice; mozzarella, cheese"),
        B("Arancini from leftover risotto with a gluten-free crumb.", "rice, risotto; mozzarella, cheese; fry, fried, bake, baked"),
        B("Vanilla panna cotta with strawberries for dessert.", "cream; gelatin, gelatine, agar; strawberry, strawberries"),
        B("Pollo alla diavola: spatchcocked chicken with chili and lemon.", "chicken; chili, chilli, pepperoncino, pepper flakes; lemon"),
        B("Cod baked in cartoccio with cherry tomatoes and olives.", "cod, fish; tomato, tomatoes; olive, olives; parchment, foil, paper, cartoccio"),
        B("A summer salad of grilled polenta cubes, tomatoes and basil.", "polenta; tomato, tomatoes; basil"),
        B("Zucchini ribbons with basil pesto and pine nuts as a light lunch.", "zucchini, courgette; pesto, basil; pine nut, pine nuts"),
        B("Tiramisu cups with mascarpone and espresso that a coeliac can eat.", "mascarpone; espresso, coffee"),
        # e037-e048 constraint_stress
        S("Fettuccine alfredo with lots of parmesan.", f"parmesan, cheese; cream, butter; {GF_SUB}"),
        S("Tortellini in brodo for Christmas Eve.", f"broth, brodo, stock; {GF_SUB}"),
        S("Penne all'arrabbiata, spicy and quick.", f"tomato, tomatoes; chili, chilli, pepperoncino, pepper flakes; {GF_SUB}"),
        S("Focaccia with rosemary and flaky sea salt.", "rosemary; olive oil; gluten-free, gluten-free flour, rice flour, chickpea flour, almond flour, buckwheat"),
        S("Ricotta ravioli with sage butter.", f"ricotta; sage; {GF_SUB}"),
        S("Chicken parmesan with a crust of breadcrumbs.", f"chicken; parmesan, mozzarella, cheese; tomato, tomatoes, marinara; {GF_SUB}, gluten-free breadcrumbs"),
        S("Bruschetta with tomatoes and basil as a starter.", f"tomato, tomatoes; basil; {GF_SUB}, gluten-free bread"),
        S("Spaghetti alle vongole with white wine and garlic.", f"clam, clams, vongole; garlic; wine; {GF_SUB}"),
        S("Orzo salad with feta and olives for a picnic.", f"olive, olives; feta, cheese; {GF_SUB}"),
        S("Farro salad with roasted vegetables for meal prep.", "vegetables, zucchini, pepper, peppers, eggplant, tomatoes; rice, quinoa, buckwheat, millet, polenta, wild rice"),
        S("Calzone stuffed with ham and mozzarella, using a classic wheat flour dough.", f"mozzarella, cheese; ham, prosciutto; {GF_SUB}"),
        S("Linguine with pesto genovese, potatoes and green beans.", f"pesto, basil; potato, potatoes; green beans; {GF_SUB}"),
        # e049-e056 edge_case
        E("Three eggs and a bit of parmesan. Dinner?", "egg, eggs; parmesan"),
        E("A gluten-free birthday cake, Italian style.", "cake; almond, almonds, almond flour, rice flour, gluten-free flour, polenta", ing=4, steps=3),
        E("Is risotto safe for a coeliac guest, and how do I make one?", "risotto, arborio, carnaroli, rice; stock, broth", ing=4, steps=3),
        E("A cheap Italian meal for a student on five euros.", "beans, lentils, polenta, rice, eggs, potatoes, chickpeas", ing=3),
        E("Leftover roast vegetables from Sunday.", "vegetables, vegetable, roast, roasted", ing=3),
        E("An antipasto board for ten people, nothing baked.", "cheese, salami, prosciutto, olives, mozzarella", ing=5),
        E("Dinner in a camper van with one burner.", "pan, pot, burner, skillet", ing=3),
        E("A can of chickpeas and a lemon.", "chickpea, chickpeas; lemon"),
        # e057-e060 cross_persona
        X("Japanese chicken katsu curry.", "chicken; curry"),
        X("Indian aloo gobi with cumin.", "potato, potatoes, aloo; cauliflower, gobi"),
        X("A Korean bibimbap with gochujang.", "rice; gochujang; spinach, carrots, carrot, bean sprouts, vegetables"),
        X("Mexican chicken tortilla soup.", "chicken; tortilla, tortillas, corn; tomato, tomatoes, chile, chili"),
    ],
    "persona_d_japanese_lowsodium": [
        B("Grilled salmon with yuzu and grated daikon for dinner.", "salmon; yuzu, citrus; daikon, radish"),
        B("A light kombu and shiitake broth with tofu and greens.", "kombu; shiitake; tofu"),
        B("Chicken and vegetable nimono simmered with mirin and ginger.", "chicken; mirin; ginger"),
        B("A cucumber and wakame sunomono salad with rice vinegar.", "cucumber; wakame, seaweed; vinegar, rice vinegar"),
        B("Oyakodon with chicken thighs, egg and onion.", "chicken; egg, eggs; onion"),
        B("Steamed cod with ginger, scallion and citrus.", "cod, fish; ginger; scallion, scallions, citrus, yuzu, lemon"),
        B("A vegetable tempura plate with a citrus dipping sauce.", "vegetables, sweet potato, zucchini, eggplant, shiitake; batter, flour; citrus, yuzu, lemon, dipping"),
        B("Chawanmushi with shrimp and shiitake.", "egg, eggs; shrimp; shiitake"),
        S("Chicken teriyaki with plenty of soy sauce.", "chicken; mirin, ginger, glaze"),
        S("A classic miso soup with tofu and wakame.", "tofu; wakame, seaweed"),
        S("Salt-grilled mackerel, shioyaki style.", "mackerel; grill, grilled, broil; lemon, citrus, yuzu, daikon, ginger"),
        S("Shoyu ramen with a rich broth.", "ramen, noodles; broth, stock"),
        S("Umeboshi onigiri for a picnic.", "rice; onigiri, ball, balls, triangle, shape"),
        S("Yakitori with a tare made from tamari.", "chicken; skewer, skewers; mirin, ginger, tare, glaze"),
        E("I only have rice and an egg.", "rice; egg"),
        E("Something Japanese but light.", "", ing=4, steps=3),
        E("Hungry, ten minutes, one pan.", "pan, skillet"),
        E("Leftover grilled fish: what now?", "fish"),
        X("An Italian risotto with mushrooms and parmesan.", "arborio, rice, risotto; mushroom, mushrooms; parmesan, cheese"),
        X("A spicy Indian chana masala.", "chickpeas, chickpea, chana; cumin, garam masala, chili, chilli, spices"),
        # e021-e036 basic_alignment
        B("Sukiyaki-style beef hot pot with tofu, shiitake and napa cabbage.", "beef; tofu; shiitake, mushrooms; cabbage"),
        B("Agedashi tofu in a light ginger and daikon broth.", "tofu; daikon, radish; ginger"),
        B("Cold soba with a yuzu dipping sauce on a hot day.", "soba, buckwheat noodles, noodles; yuzu, citrus"),
        B("Tamagoyaki, the rolled omelette, for a bento box.", "egg, eggs; roll, rolled, omelette"),
        B("Sesame spinach salad (gomae) as a side dish.", "spinach; sesame"),
        B("Japanese curry with chicken, carrots and potatoes, made without the boxed roux.", "chicken; carrot, carrots; potato, potatoes; curry powder, spices, garam masala"),
        B("Seared tuna tataki with a ponzu of citrus and rice vinegar.", "tuna; citrus, yuzu, lemon, orange; vinegar"),
        B("Okonomiyaki with cabbage and spring onions for a family supper.", "cabbage; flour, batter; egg, eggs"),
        B("Nikujaga, the home-style beef and potato stew.", "beef; potato, potatoes; onion, carrot, carrots"),
        B("Clams steamed in sake with butter and scallions.", "clam, clams; sake; scallion, scallions, green onion"),
        B("Hiyayakko: chilled tofu with ginger and bonito flakes.", "tofu; ginger; bonito, katsuobushi"),
        B("Vegetable gyoza with cabbage and shiitake, pan-fried.", "gyoza, dumplings, wrappers; cabbage; shiitake, mushrooms"),
        B("Kabocha squash simmered in mirin and kombu stock.", "kabocha, squash, pumpkin; mirin; kombu, dashi, stock"),
        B("Ginger pork (shogayaki) for a weeknight bento.", "pork; ginger"),
        B("Chicken katsu baked in the oven instead of deep-fried.", "chicken; panko, breadcrumbs, crumbs; bake, baked, oven"),
        B("Matcha and black sesame mochi for an afternoon tea.", "matcha; sesame; glutinous rice flour, mochiko, shiratamako, rice flour"),
        # e037-e048 constraint_stress
        S("A salmon bowl drenched in teriyaki sauce, like the takeaway one.", "salmon; rice; mirin, ginger, glaze"),
        S("Karaage chicken marinated in soy sauce and garlic.", "chicken; garlic, ginger; fry, fried"),
        S("Miso-glazed eggplant, nasu dengaku.", "eggplant, aubergine, nasu; glaze, mirin, sesame"),
        S("Tonkotsu ramen with shoyu-marinated eggs.", "pork, broth; egg, eggs; noodles, ramen"),
        S("Quick pickled cucumbers made with plenty of salt.", "cucumber, cucumbers; vinegar, rice vinegar, kombu"),
        S("Okayu rice porridge topped with umeboshi.", "rice; ginger, scallion, scallions, kombu, sesame"),
        S("Gyudon with beef simmered in soy sauce and sugar.", "beef; onion; rice"),
        S("Edamame tossed in coarse sea salt as a beer snack.", "edamame; citrus, sesame, chili, garlic, lemon, yuzu, shichimi"),
        S("Yakisoba stir-fried with a bottled sauce and extra MSG.", "noodles, soba; cabbage, vegetables, pork"),
        S("Salmon cured in kosher salt and sugar, with Japanese flavours.", "salmon; citrus, yuzu, kombu, sugar, mirin"),
        S("Tamari-marinated tofu steaks.", "tofu; ginger, garlic, mirin, citrus"),
        S("A quick chicken ramen made with bouillon cubes.", "chicken; noodles, ramen; ginger, scallion, scallions, kombu, shiitake"),
        # e049-e056 edge_case
        E("Only tofu and a bunch of scallions in the fridge.", "tofu; scallion, scallions, green onion, green onions"),
        E("My doctor says under 1500 mg of sodium a day. A whole day of Japanese meals?", "breakfast; lunch; dinner", ing=6, steps=3),
        E("A bento for a kid who only eats rice and chicken.", "rice; chicken", ing=3),
        E("I have a rice cooker and nothing else.", "rice cooker", ing=3),
        E("Leftover sushi rice from a party.", "rice", ing=3),
        E("How do I get flavour without salt in Japanese cooking? Give me a dish.", "kombu, shiitake, citrus, yuzu, vinegar, ginger, bonito", ing=3),
        E("Five minutes, one mug, breakfast.", "mug, microwave"),
        E("Cold rice, two eggs and half a cucumber.", "rice; egg, eggs; cucumber", ing=3),
        # e057-e060 cross_persona
        X("A Korean kimchi fried rice with a fried egg.", "kimchi; rice; egg"),
        X("Mexican black bean tacos.", "bean, beans; tortilla, tortillas, taco, tacos"),
        X("Chinese kung pao chicken.", "chicken; peanut, peanuts; chili, chilli, chilies, sichuan, pepper"),
        X("Italian lemon chicken with roasted potatoes.", "chicken; lemon; potato, potatoes"),
    ],
    "persona_e_mexican_vegan": [
        B("Black bean tacos with avocado salsa on corn tortillas.", "black beans, beans; avocado; tortilla, tortillas"),
        B("Sweet potato and black bean enchiladas with red sauce.", "sweet potato; beans, black beans; sauce, chile, chili, enchilada sauce"),
        B("A smoky chipotle lentil chili for a crowd.", "lentil, lentils; chipotle"),
        B("Pozole verde with hominy, tomatillos and mushrooms.", "hominy; tomatillo, tomatillos; mushroom, mushrooms"),
        B("Jackfruit carnitas-style tacos with pickled onions.", "jackfruit; onion, onions"),
        B("A burrito bowl with cilantro lime rice and pinto beans.", "rice; lime, cilantro; pinto, beans"),
        B("Roasted cauliflower tacos with cashew crema.", "cauliflower; cashew, cashews"),
        B("Tortilla soup with guajillo chilies and avocado.", "tortilla, tortillas; guajillo, chile, chiles, chili; avocado"),
        S("A taco with chorizo and cotija cheese.", f"tortilla, tortillas, taco; {VEGAN_SUB}"),
        S("Chicken enchiladas with sour cream.", f"tortilla, tortillas; {VEGAN_SUB}; cashew crema, cashew cream, coconut cream, vegan"),
        S("Huevos rancheros for brunch.", "tortilla, tortillas; salsa, tomato, tomatoes, ranchero; tofu, chickpea, chickpeas, beans"),
        S("Queso fundido with melted cheese and chorizo.", "cashew, cashews, vegan cheese, nutritional yeast, potato; chile, chili, poblano, chipotle"),
        S("Fish tacos with a creamy chipotle mayonnaise.", f"tortilla, tortillas; chipotle; {VEGAN_SUB}, banana blossom"),
        S("Tres leches cake soaked in evaporated milk and cream for a birthday.", "cake; coconut milk, plant milk, oat milk, almond milk, soy milk, coconut cream"),
        E("I have tortillas and beans. That's all.", "tortilla, tortillas; bean, beans"),
        E("Something Mexican tonight.", "", ing=4, steps=3),
        E("A snack for movie night, five minutes.", ""),
        E("What can I do with one avocado?", "avocado"),
        X("Make me a Korean bibimbap.", "rice; gochujang, chili, gochugaru; spinach, carrot, carrots, vegetables, bean sprouts"),
        X("A creamy Italian mushroom risotto.", "arborio, rice, risotto; mushroom, mushrooms"),
        # e021-e036 basic_alignment
        B("Chiles rellenos stuffed with rice, black beans and corn.", "poblano, poblanos, chile, chiles, pepper, peppers; rice; beans, black beans; corn"),
        B("Mushroom al pastor tacos with charred pineapple.", "mushroom, mushrooms; pineapple; tortilla, tortillas, taco, tacos"),
        B("Mole poblano over roasted vegetables for a holiday dinner.", "chocolate, cacao, cocoa; ancho, mulato, pasilla, chile, chiles, chili; vegetables"),
        B("Elote-style grilled corn with cashew crema and chili powder.", "corn; cashew, cashews; chili, chile, tajin"),
        B("Tamales with a red chile and jackfruit filling.", "masa; jackfruit; husk, husks"),
        B("Chilaquiles verdes with salsa verde and avocado for brunch.", "tortilla, tortillas, chips; salsa verde, tomatillo, tomatillos; avocado"),
        B("Guacamole and pico de gallo for a game night.", "avocado, avocados; tomato, tomatoes; lime"),
        B("Sopa de fideo in a tomato broth.", "fideo, noodles, vermicelli; tomato, tomatoes"),
        B("Black bean and sweet potato flautas baked in the oven.", "black beans, beans; sweet potato; tortilla, tortillas"),
        B("Calabacitas: sauteed zucchini, corn and green chiles.", "zucchini, squash; corn; chile, chiles, chili, poblano, jalapeno"),
        B("Spicy soyrizo breakfast burritos with potatoes.", "soyrizo, tofu; potato, potatoes; tortilla, tortillas, burrito, burritos"),
        B("Charro-style pinto beans slow-cooked with tomatoes and jalapenos.", "pinto, beans; tomato, tomatoes; jalapeno, jalapenos, chile"),
        B("Mexican red rice (arroz rojo) to go with enchiladas.", "rice; tomato, tomatoes"),
        B("Tofu tinga tostadas with chipotle and shredded lettuce.", "tofu; chipotle; tostada, tostadas, tortilla, tortillas"),
        B("Horchata made with rice, cinnamon and almonds.", "rice; cinnamon; almond, almonds", ing=3),
        B("Nopales salad with tomato, onion and lime.", "nopal, nopales, cactus; tomato, tomatoes; lime"),
        # e037-e048 constraint_stress
        S("Carne asada tacos with grilled steak.", f"tortilla, tortillas, taco, tacos; {VEGAN_SUB}, portobello"),
        S("Cheese quesadillas for the kids' lunch.", "tortilla, tortillas; vegan cheese, cashew, cashews, nutritional yeast, beans, refried beans"),
        S("Shrimp ceviche with lime and cilantro.", f"lime; cilantro; {VEGAN_SUB}, chickpeas"),
        S("Pork carnitas burrito with rice and beans.", f"tortilla, tortillas, burrito; rice; {VEGAN_SUB}"),
        S("Birria with beef and a rich consomme for dipping.", f"consomme, broth, stock; guajillo, ancho, chile, chiles; {VEGAN_SUB}"),
        S("Flan made with eggs and condensed milk.", "caramel, sugar; coconut milk, plant milk, oat milk, agar, cornstarch, tofu"),
        S("Enfrijoladas topped with crumbled queso fresco.", "bean, beans; tortilla, tortillas"),
        S("Pozole rojo with pork shoulder for New Year.", f"hominy; guajillo, ancho, chile, chiles; {VEGAN_SUB}"),
        S("Breakfast tacos with scrambled eggs and bacon.", "tortilla, tortillas, taco, tacos; tofu, chickpea, chickpeas, chickpea flour, beans"),
        S("Churros made with butter and eggs, rolled in cinnamon sugar.", "cinnamon; sugar; flour; fry, fried"),
        S("Nachos loaded with cheddar, ground beef and sour cream.", "chips, tortilla, nachos; beans, lentils, walnuts, mushrooms, soyrizo; avocado, salsa, guacamole"),
        S("Chiles en nogada with a walnut cream sauce and pork picadillo.", "walnut, walnuts; pomegranate; poblano, poblanos, chile, chiles"),
        # e049-e056 edge_case
        E("Just a can of black beans and some rice.", "beans, black beans; rice"),
        E("A vegan pan de muerto for Day of the Dead.", "flour; orange, anise", ing=5, steps=4),
        E("I'm camping with a fire and a cast iron skillet.", "skillet, pan, fire", ing=3),
        E("A high-protein Mexican meal after the gym, no protein powder.", "beans, tofu, lentils, tempeh, seitan, chickpeas", ("protein powder",), ing=4, steps=3),
        E("Leftover corn tortillas going stale.", "tortilla, tortillas", ing=3),
        E("Three limes, an onion and a bag of frozen corn.", "lime, limes; onion; corn", ing=3),
        E("Is masa harina vegan, and what can I make with it?", "masa", ing=3),
        E("Taco Tuesday for twelve people on a budget.", "taco, tacos, tortilla, tortillas; beans, lentils, potatoes, mushrooms", ing=5, steps=3),
        # e057-e060 cross_persona
        X("Japanese vegetable ramen with a rich broth.", "noodles, ramen; broth, stock"),
        X("A French onion soup for a cold night.", "onion, onions; broth, stock"),
        X("An Indian chana masala with rice.", "chickpea, chickpeas, chana; rice, tomato, tomatoes"),
        X("Chinese mapo tofu.", "tofu; chili, chilli, sichuan, doubanjiang, bean paste"),
    ],
    "persona_f_chinese_keto": [
        B("Kung pao chicken with peanuts, chilies and Sichuan peppercorns.", "chicken; peanut, peanuts; chili, chilies, chilli, sichuan, peppercorns"),
        B("Red-braised pork belly without any sweetener.", "pork; soy, star anise, shaoxing, rice wine", ("sweetener", "erythritol", "stevia", "monk fruit", "allulose")),
        B("Stir-fried bok choy and shiitake with garlic.", "bok choy; shiitake, mushrooms, mushroom; garlic"),
        B("Mapo tofu with ground pork and chili bean paste.", "tofu; pork; bean paste, doubanjiang, chili"),
        B("Egg drop soup with spinach and mushrooms.", "egg, eggs; spinach; mushroom, mushrooms"),
        B("Beef and broccoli stir-fry for two.", "beef; broccoli"),
        B("Cumin lamb stir-fry with peppers and onions.", "lamb; cumin; pepper, peppers, onion, onions"),
        B("Steamed fish with ginger and scallions.", "fish, sea bass, cod, snapper; ginger; scallion, scallions, green onion"),
        S("Yangzhou fried rice with shrimp and peas.", "shrimp, prawns; peas, pea; cauliflower rice"),
        S("Chicken chow mein with crispy noodles.", f"chicken; {KETO_SUB}"),
        S("Sweet and sour pork with pineapple and sugar.", "pork; vinegar, rice vinegar", ("pineapple",)),
        S("Honey garlic chicken wings.", "chicken, wings; garlic"),
        S("Pork buns with a fluffy bao dough.", f"pork; {KETO_SUB}, mozzarella"),
        S("Beef ho fun with wide rice noodles.", f"beef; {KETO_SUB}"),
        E("I only have eggs and scallions.", "egg, eggs; scallion, scallions, green onion"),
        E("Something Chinese for dinner.", "", ing=4, steps=3),
        E("Leftover roast chicken, ten minutes.", "chicken"),
        E("A quick side dish, low effort.", ""),
        X("Make me a Mexican vegan burrito.", "beans, bean, tofu, mushrooms, cauliflower; tortilla, burrito, lettuce, wrap", VEGAN),
        X("An Indian vegetable biryani, please.", "vegetables, carrot, carrots, peas, cauliflower; saffron, garam masala, cumin, cardamom, spices"),
        # e021-e036 basic_alignment
        B("Salt and pepper squid with chili and garlic.", "squid; garlic; chili, chilli, pepper"),
        B("Sichuan dry-fried green beans with minced pork.", "green beans, beans; pork; sichuan, peppercorns, chili, chilies"),
        B("Silky steamed egg custard with scallions.", "egg, eggs; steam, steamed, steamer; scallion, scallions, green onion", ing=3),
        B("White-cut chicken with a ginger and scallion oil.", "chicken; ginger; scallion, scallions, green onion"),
        B("Hot and sour soup with tofu, mushrooms and egg ribbons.", "vinegar; tofu; mushroom, mushrooms"),
        B("Twice-cooked pork belly with leeks and chili bean paste.", "pork; leek, leeks; bean paste, doubanjiang"),
        B("Cantonese steamed spare ribs with black beans and garlic.", "ribs, spare ribs, pork; black beans, fermented black beans; garlic"),
        B("Egg and tomato stir-fry for a quick lunch.", "egg, eggs; tomato, tomatoes", ing=3),
        B("Sichuan boiled fish in chili oil (shui zhu yu).", "fish; chili, chilli, chili oil; sichuan, peppercorns"),
        B("Stir-fried Chinese eggplant with garlic and chili.", "eggplant, aubergine; garlic; chili, chilli"),
        B("Lion's head meatballs braised with napa cabbage, no filler.", "pork, meatballs; cabbage"),
        B("Five-spice roast duck legs with bok choy.", "duck; five-spice, five spice; bok choy"),
        B("Smashed cucumber salad with garlic and black vinegar.", "cucumber, cucumbers; garlic; vinegar", ing=3),
        B("Chinese braised beef shank with star anise.", "beef, shank; star anise"),
        B("Stir-fried prawns with snow peas and ginger.", "prawns, shrimp; snow peas, peas; ginger"),
        B("Hot pot at home with a spicy broth, lamb slices and mushrooms.", "broth, stock; lamb; mushroom, mushrooms"),
        # e037-e048 constraint_stress
        S("Chicken lo mein with lots of vegetables.", f"chicken; cabbage, peppers, pepper, carrot, bok choy, vegetables; {KETO_SUB}"),
        S("Char siu pork glazed with honey and hoisin.", "pork; five-spice, five spice, garlic, sugar-free, erythritol, monk fruit"),
        S("Dan dan noodles with sesame and minced pork.", f"pork; sesame; {KETO_SUB}"),
        S("General Tso's chicken coated in cornstarch.", "chicken; chili, chilli, chilies, garlic, ginger"),
        S("Congee with century egg for breakfast.", "egg, eggs; ginger, scallion, scallions; cauliflower rice, cauliflower"),
        S("Shredded potato and green pepper stir-fry (tudou si).", "pepper, peppers; daikon, radish, jicama, zucchini, cauliflower, turnip, kohlrabi, cabbage"),
        S("Scallion pancakes made with flour.", "scallion, scallions, green onion; almond flour, coconut flour, egg, eggs"),
        S("Egg fried rice with peas and lots of soy sauce.", "egg, eggs; cauliflower rice"),
        S("Orange chicken with a sweet sugar glaze.", "chicken; orange, zest"),
        S("Pan-fried mushroom dumplings made with dumpling wrappers.", f"mushroom, mushrooms; {KETO_SUB}"),
        S("Lettuce wraps with minced chicken in oyster sauce.", "lettuce; chicken"),
        S("Singapore vermicelli with curry powder and shrimp.", f"curry; shrimp, prawns; {KETO_SUB}"),
        # e049-e056 edge_case
        E("Only a head of cabbage and some bacon.", "cabbage; bacon"),
        E("Keto on a long-haul flight: a packable Chinese snack.", "eggs, egg, nuts, jerky, beef, chicken, peanuts, cucumber", ing=3),
        E("My wok is rusty: what can I cook in a saucepan?", "saucepan, pan, pot", ing=3),
        E("Chinese New Year dinner where nobody notices it is low carb.", "fish, dumplings, pork, duck, chicken, prawns", ing=5, steps=3),
        E("Three chicken thighs and a bag of spinach.", "chicken; spinach"),
        E("A Chinese breakfast that isn't eggs.", "", ("egg", "eggs"), ing=3),
        E("Leftover Peking duck from the restaurant.", "duck", ing=3),
        E("Hungry at midnight, microwave only.", "microwave"),
        # e057-e060 cross_persona
        X("A Japanese miso-glazed salmon.", "salmon; miso"),
        X("Korean spicy tofu stew.", "tofu; gochugaru, gochujang, chili, chilli"),
        X("Italian chicken cacciatore.", "chicken; tomato, tomatoes; pepper, peppers, olives, olive"),
        X("Indian palak paneer.", "paneer; spinach, palak"),
    ],
}


def checklist(case: Case) -> dict:
    ing, steps = DEFAULT_MINIMUMS[case.category]
    groups = [[w.strip() for w in group.split(",") if w.strip()] for group in case.req.split(";")]
    return {
        "forbid": list(case.forbid),
        "require_any": [g for g in groups if g],
        "min_ingredients": case.ing if case.ing is not None else ing,
        "min_steps": case.steps if case.steps is not None else steps,
    }
